"""qbench: an evaluation harness for image-quality models."""
from qbench.core.model import Model, ModelConfig, ModelError
from qbench.core.records import Prediction, Sample
from qbench.core.registry import create_model, get_task, register_model, register_task
from qbench.core.task import DataError, DataNotFound, Task, TaskData

__all__ = ["Model", "ModelConfig", "ModelError", "Prediction", "Sample", "Task", "TaskData",
           "DataError", "DataNotFound", "create_model", "get_task", "register_model",
           "register_task"]
