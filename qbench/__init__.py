"""qbench: an evaluation harness for image-quality models."""
from .model import Model, ModelConfig, ModelError
from .records import Prediction, Sample
from .registry import create_model, get_task, register_model, register_task
from .task import DataError, DataNotFound, Task, TaskData

__all__ = ["Model", "ModelConfig", "ModelError", "Prediction", "Sample", "Task", "TaskData",
           "DataError", "DataNotFound", "create_model", "get_task", "register_model",
           "register_task"]
