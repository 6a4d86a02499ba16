"""Classical and pyiqa metrics as models.

`pyiqa:<metric>`  any pyiqa metric (`pip install pyiqa`). No-reference metrics answer score
                  tasks; full-reference ones answer comparison tasks (each candidate against the
                  reference; the better one wins, equal scores are "Similar"). pyiqa's wheel ships
                  no weights: offline, `piqe` and the weight-free metrics run; others need
                  `--model-arg weights=FILE` (or pyiqa's own cache). lower_better is pyiqa's.
`brisque`         BRISQUE with the SVM model that the `brisque` package ships (offline).

Both are CPU-bound and score one image at a time. With `--workers N` (N > 1) on the CPU they run
min(N, cores) replicas of one thread each in worker processes forked when the model is built,
and share the samples of each batch among them.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from qbench import Model, ModelConfig, ModelError, Prediction, Sample, register_model
from qbench.backends.vlm import resolve_device
from qbench.core.model import Timer


def score_one(score: Callable[[Sequence[Image.Image]], Prediction],
              images: Sequence[Image.Image]) -> Prediction:
    """Score one sample: a metric that fails on its image (too small, constant) costs that
    sample, recorded as a model error, not the batch."""
    with Timer() as timer:
        try:
            prediction = score(images)
        except (ValueError, RuntimeError, AssertionError, ArithmeticError) as exc:
            prediction = Prediction(task="", sample_id="", status="model_error",
                                    error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    prediction.latency_s = timer.seconds
    return prediction


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# The scoring function of this worker process's replica (set once, when the worker starts).
_replica_score: Callable[[Sequence[Image.Image]], Prediction] | None = None


def _start_replica(score: Callable[[Sequence[Image.Image]], Prediction]) -> None:
    global _replica_score
    _replica_score = score
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    if "torch" in sys.modules:   # one thread: a forked child hangs in an inherited OpenMP pool
        sys.modules["torch"].set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A replica whose parent was killed (not closed) would otherwise wait for work forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _score_in_replica(images: Sequence[Image.Image]) -> Prediction:
    assert _replica_score is not None, "runs only in a replica, which _start_replica set up"
    return score_one(_replica_score, images)


class Replicas:
    """`count` copies of a model's scoring function in worker processes. They are forked when
    the model is built, so each inherits the built metric (no second import or load), before
    the runner starts its decoding threads. Samples go out one by one, so a slow image does not
    hold up the others."""

    def __init__(self, score: Callable[[Sequence[Image.Image]], Prediction], count: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        self.count = count
        self.pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_start_replica, initargs=(score,))
        self.pool.submit(int).result()   # fork every worker now (a fork pool starts them all)

    def map(self, images: Sequence[Sequence[Image.Image]]) -> list[Prediction]:
        from concurrent.futures.process import BrokenProcessPool
        try:
            return list(self.pool.map(_score_in_replica, images))
        except BrokenProcessPool:
            raise ModelError(f"a worker process of the {self.count} metric replicas died "
                             "(out of memory?); run with --workers 1") from None

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def replica_count(config: ModelConfig, on_cpu: bool) -> int:
    """How many replicas a CPU-bound model runs: the run's workers, at most one per core; one
    off Linux (forking a process that holds a built metric is safe there, not on macOS)."""
    if not on_cpu or not sys.platform.startswith("linux"):
        return 1
    return min(config.workers, usable_cores())


class OneAtATime(Model):
    """A model that scores sample by sample with `_score`, in `replica_count` processes when
    there are several."""

    replicas: Replicas | None = None

    def start_replicas(self, on_cpu: bool = True) -> None:
        count = replica_count(self.config, on_cpu)
        if count > 1:
            self.replicas = Replicas(self._score, count)

    @abstractmethod
    def _score(self, images: Sequence[Image.Image]) -> Prediction:
        """One sample's prediction (task and sample id are filled in by `predict`)."""

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        predictions = self.replicas.map(images) if self.replicas \
            else [score_one(self._score, imgs) for imgs in images]
        for sample, prediction in zip(samples, predictions, strict=True):
            prediction.task, prediction.sample_id = sample.task, sample.id
        return predictions

    def close(self) -> None:
        if self.replicas:
            self.replicas.close()
            self.replicas = None


def finite_score(value: float) -> Prediction:
    if not math.isfinite(value):
        return Prediction(task="", sample_id="", status="model_error",
                          error=f"metric returned {value}")
    return Prediction(task="", sample_id="", score=value)


def preferred(score_a: float, score_b: float, lower_better: bool) -> str:
    if score_a == score_b:
        return "Similar"
    return "Image A" if (score_a < score_b) == lower_better else "Image B"


# ------------------------------------------------------------------------------ pyiqa

@dataclass(frozen=True)
class PyiqaOptions:
    weights: Path | None = None


@register_model("pyiqa", family=True)
class PyiqaMetric(OneAtATime):
    """Any pyiqa metric: no-reference ones score, full-reference ones compare (pip install pyiqa)"""

    # Most pyiqa metrics load weights that pyiqa itself downloads when the metric is built,
    # outside qbench's fetch (unpinned, unchecked); piqe and entropy need none.
    weights = "pyiqa downloads (most)"
    Options = PyiqaOptions
    options: PyiqaOptions

    def __init__(self, metric: str, config: ModelConfig):
        self.name = f"pyiqa:{metric}"
        super().__init__(config)
        options = self.options
        try:
            import pyiqa
            import torch
        except ImportError:
            raise ModelError(f"{self.name}: pyiqa is not installed: pip install pyiqa") from None
        if metric not in pyiqa.list_models():
            raise ModelError(f"{self.name}: pyiqa has no metric {metric!r} "
                             f"(it has {len(pyiqa.list_models())}, e.g. piqe, niqe, brisque, "
                             "musiq, lpips)")
        kwargs = {}
        if options.weights is not None:
            if not options.weights.is_file():
                raise ModelError(f"{self.name}: weights file not found: {options.weights}")
            kwargs["pretrained_model_path"] = str(options.weights)
        try:
            self.metric = pyiqa.create_metric(
                metric, device=torch.device(resolve_device(config.device)), **kwargs)
        except Exception as exc:  # offline, pyiqa's download attempt fails in many ways
            raise ModelError(
                f"{self.name}: cannot build the metric ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); if it needs weights, "
                "download the file pyiqa names above and pass --model-arg weights=FILE") from None
        self.lower_better = bool(self.metric.lower_better)
        self.full_reference = self.metric.metric_mode == "FR"
        self.kinds = frozenset({"comparison"} if self.full_reference else {"score"})
        self.start_replicas(on_cpu=resolve_device(config.device) == "cpu")

    def _value(self, image: Image.Image, reference: Image.Image | None = None) -> float:
        import torch

        def tensor(im: Image.Image) -> torch.Tensor:
            # CHW in memory, as pyiqa's own loader gives it: its filters run faster on that
            # than on a strided view of the HWC array
            chw = np.ascontiguousarray(np.asarray(im, dtype=np.float32).transpose(2, 0, 1))
            return torch.from_numpy(chw / 255.0)[None]

        with torch.no_grad():
            value = self.metric(tensor(image), tensor(reference)) if reference is not None \
                else self.metric(tensor(image))
        return float(value.reshape(-1)[0])

    def _score(self, imgs: Sequence[Image.Image]) -> Prediction:
        if not self.full_reference:
            return finite_score(self._value(imgs[0]))
        reference, image_a, image_b = imgs
        score_a, score_b = self._value(image_a, reference), self._value(image_b, reference)
        if not (math.isfinite(score_a) and math.isfinite(score_b)):
            return finite_score(math.nan)
        return Prediction(task="", sample_id="", choice=preferred(score_a, score_b,
                                                                  self.lower_better),
                          extra={"score_a": score_a, "score_b": score_b})

    def close(self) -> None:
        super().close()
        self.metric = None


# ------------------------------------------------------------------------------ brisque

BRISQUE_MIN_SIDE = 16  # its 7x7 filters run on the image and on a half-size copy


@register_model("brisque")
class Brisque(OneAtATime):
    """BRISQUE with the SVM shipped in the brisque package (lower is better)"""

    name = "brisque"
    lower_better = True

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        try:
            from brisque import BRISQUE
        except ImportError as exc:
            raise ModelError(f"brisque: {str(exc).splitlines()[0]}; pip install brisque "
                             "opencv-python-headless") from None
        self.scorer = BRISQUE(url=False)
        self.start_replicas()

    def _score(self, imgs: Sequence[Image.Image]) -> Prediction:
        import cv2
        import skimage.color
        if min(imgs[0].size) < BRISQUE_MIN_SIDE:
            raise ValueError(f"image {imgs[0].size[0]}x{imgs[0].size[1]} is too small for "
                             f"BRISQUE (needs {BRISQUE_MIN_SIDE} px a side)")
        gray = skimage.color.rgb2gray(np.asarray(imgs[0]))
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        features = np.concatenate([self.scorer.calculate_brisque_features(
            g, kernel_size=7, sigma=7 / 6) for g in (gray, half)])
        # The package's own score() hands 1-element arrays to float(), which numpy 2 rejects:
        # flatten every feature to a plain float first, then use its scaling and SVM.
        flat = np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in features])
        return finite_score(float(self.scorer.calculate_image_quality_score(flat)))
