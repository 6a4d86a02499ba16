"""Tasks of every kind and a scripted model for the run-folder tests (loaded with --include,
also by the subprocesses of the concurrency tests)."""
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qbench import Model, Prediction, Sample, Task, TaskData, register_model, register_task
from qbench.core.protocol import CHOICES, CLASSES, LEVELS


class RoundTripTask(Task):
    """Reads its spec, rt.json, from the folder $RT_ROOT names."""

    def locate(self, data_root, override=None):
        return Path(os.environ.get("RT_ROOT", "."))

    def spec(self, folder) -> dict:
        return json.loads((folder / "rt.json").read_text())


@register_task
class FlippingScoreTask(RoundTripTask):
    """A score task whose ground-truth direction is decided when it loads (as CSIQ from a DeQA
    meta): the declaration says higher is better, the file may say otherwise."""

    name, kind, in_all = "rt-score", "score", False

    def load(self, folder, split):
        spec = self.spec(folder)
        rng = np.random.default_rng(spec["seed"])
        quality = rng.uniform(1, 5, spec["n"])   # mos_norm: higher is better, always
        raw = 6 - quality if spec["lower_better"] else quality
        samples = [Sample(id=f"s{i:03d}", task=self.name, kind="score", images=(),
                          mos=float(r), mos_norm=float(q)) for i, (r, q) in enumerate(zip(raw, quality))]
        return TaskData(samples, source="rt.json", lower_better=spec["lower_better"])


@register_task
class RoundTripDegradation(RoundTripTask):
    name, kind, in_all = "rt-degradation", "degradation", False

    def load(self, folder, split):
        n = self.spec(folder)["n"]
        return TaskData([Sample(id=f"d{i:03d}", task=self.name, kind="degradation", images=(),
                                distortion_class=CLASSES[i % 5],
                                severity="null" if CLASSES[i % 5] == "null" else LEVELS[i % 5])
                         for i in range(n)], source="rt.json")


@register_task
class RoundTripComparison(RoundTripTask):
    name, kind, in_all = "rt-comparison", "comparison", False

    def load(self, folder, split):
        n = self.spec(folder)["n"]
        return TaskData([Sample(id=f"c{i:03d}", task=self.name, kind="comparison", images=(),
                                choice=CHOICES[i % 3]) for i in range(n)], source="rt.json")


@dataclass(frozen=True)
class RoundTripOptions:
    lower: bool = False
    delay: float = 0.0
    wait_for: str | None = None
    die_rank: int | None = None
    die_after: int = 0
    log: str | None = None
    crash: bool = False
    noise: float = 0.5


@register_model("rt-model")
class RoundTripModel(Model):
    """Answers from the truth plus noise, seeded per sample; `lower` scores lower-is-better;
    `crash` raises on every batch (a typo in predict); `delay` seconds per batch; `log` a file
    that records every sample id it is asked about; `die_rank` / `die_after`: that launcher rank
    exits hard after that many batches, the first time only (a `.died` file beside `log`);
    `wait_for` a file whose appearance lets the first batch go on."""

    name = "rt-model"
    kinds = frozenset({"score", "degradation", "comparison"})
    needs_images = False
    Options = RoundTripOptions

    def __init__(self, config):
        super().__init__(config)
        self.lower_better = self.options.lower

    def predict(self, samples, images):
        options = self.options
        time.sleep(options.delay)
        while options.wait_for and not Path(options.wait_for).exists():   # hold the run
            time.sleep(0.05)
        self.batches = getattr(self, "batches", 0) + 1
        marker = Path(str(options.log)).with_suffix(".died")
        if options.die_rank is not None and int(os.environ.get("RANK", 0)) == options.die_rank \
                and self.batches > options.die_after and not marker.exists():
            marker.touch()   # a launcher rank that dies mid-run, once
            os._exit(9)
        if options.log:
            with open(options.log, "a") as f:
                f.writelines(f"{s.id}\n" for s in samples)
        if options.crash:
            return samples.undefined_attribute   # an AttributeError, as a typo gives
        noise = options.noise
        out = []
        for s in samples:
            rng = np.random.default_rng([int(s.id[1:]), int(noise * 100)])
            if s.kind == "score":   # a good model: it sees quality, whatever the file's direction
                value = s.mos_norm + rng.normal(0, noise)
                out.append(Prediction(task=s.task, sample_id=s.id,
                                      score=float(-value if self.lower_better else value)))
            elif s.kind == "degradation":
                cls = s.distortion_class if rng.random() > noise / 2 else "noise"
                out.append(Prediction(task=s.task, sample_id=s.id, distortion_class=cls,
                                      severity=s.severity if cls == s.distortion_class else "slight"))
            else:
                out.append(Prediction(task=s.task, sample_id=s.id,
                                      choice=s.choice if rng.random() > noise / 2 else "Similar"))
        return out
