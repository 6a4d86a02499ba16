"""A user's own task and model, as `--include` loads them: a folder of PNGs with labels.csv
(name,mos) and a model that scores mean luminance. Used by the runner tests."""
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qbench import (
    DataError,
    Model,
    Prediction,
    Sample,
    Task,
    TaskData,
    register_model,
    register_task,
)


@register_task
class ToyTask(Task):
    name = "toy"
    kind = "score"
    in_all = True
    markers = ("labels.csv",)

    def load(self, folder: Path, split: str) -> TaskData:
        try:
            rows = list(csv.DictReader((folder / "labels.csv").open()))
        except OSError as exc:
            raise DataError(f"{folder / 'labels.csv'}: {exc}") from None
        samples = [Sample(id=r["name"], task=self.name, kind="score",
                          images=(str(folder / r["name"]),), mos=float(r["mos"]),
                          mos_norm=float(r["mos"])) for r in rows]
        return TaskData(samples, source=str(folder / "labels.csv"))


@dataclass(frozen=True)
class LumaOptions:
    delay: float = 0.0        # seconds per batch
    log: str | None = None    # a file that records every sample id the model is asked about


@register_model("toy-luma")
class LumaModel(Model):
    """Mean luminance as quality (test model)"""

    name = "toy-luma"
    kinds = frozenset({"score"})
    Options = LumaOptions

    def predict(self, samples, images):
        delay, log = self.options.delay, self.options.log
        if delay:
            time.sleep(delay)
        if log:
            with open(log, "a") as f:
                f.writelines(f"{s.id}\n" for s in samples)
                f.flush()
                os.fsync(f.fileno())
        return [Prediction(task=s.task, sample_id=s.id, score=float(np.asarray(im[0]).mean()))
                for s, im in zip(samples, images)]
