"""The model interface: a model receives a batch of samples (and their decoded images) and
returns one prediction per sample. Classical metrics, VLMs and a predictions file all fit."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from qbench.core.options import NoOptions, parse_options
from qbench.core.protocol import parse_answer
from qbench.core.records import Prediction, Sample
from qbench.core.task import ModelConvention


class ModelError(Exception):
    """A model cannot be built or run as configured; the message is one line saying what to do."""


@dataclass
class ModelConfig:
    """What the command line hands a model. `options` carries `--model-arg key=value` pairs."""

    model_path: Path | None = None
    device: str = "auto"
    batch_size: int = 8
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    workers: int = 1   # the run's --workers: CPU-bound models may run this many replicas


class Model(ABC):
    """Base class. Subclasses set `kinds` (the prompt kinds they answer), `Options` (a dataclass
    of their `--model-arg`s, parsed here so that no model can forget to refuse an unknown key or
    a value of the wrong type) and `predict`. A model family ("pyiqa:<metric>") sets its
    instance's `name` before calling this `__init__`."""

    name: str = ""
    kinds: frozenset[str] = frozenset({"score"})     # a family may set its instance's (pyiqa)
    needs_images: ClassVar[bool] = True
    weights: ClassVar[str | None] = None             # what --model-path must point at, if anything
    weights_folder: ClassVar[str | None] = None      # its default place under the model root
    lower_better: bool = False                       # score direction (e.g. NIQE, BRISQUE)
    score_range: tuple[float, float] | None = None   # (1, 5) when scores are on the MOS scale
    Options: ClassVar[type] = NoOptions              # a dataclass of the model's --model-args
    options: Any

    def __init__(self, config: ModelConfig):
        self.config = config
        self.options = parse_options(self.Options, config.options, self.name or type(self).__name__,
                                     flag="--model-arg", error=ModelError)

    @abstractmethod
    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        """One prediction per sample, in order; `images[i]` holds sample i's decoded images
        (empty lists when the model declares needs_images = False)."""

    def prepare(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> Callable[[], list[Prediction]]:
        """`predict` in two steps: the work that needs only the batch (building input tensors
        on the CPU) is done here, the rest is returned as a call. The runner prepares batch k+1
        on a worker thread while batch k's call runs, so that the device never waits for the
        CPU; prepare must not touch what that call uses. Default: nothing is done ahead."""
        return partial(self.predict, samples, images)

    def convention(self) -> ModelConvention:
        scale = self.score_range
        return ModelConvention(self.lower_better,
                               (float(scale[0]), float(scale[1])) if scale else None)

    def settings(self) -> dict[str, Any]:
        """Everything that changes the model's answers (enters the run id and the manifest)."""
        path = self.config.model_path
        return {"model_path": str(path) if path else None, "options": self.config.options,
                "seed": self.config.seed}

    def fingerprint(self) -> str | None:
        """A cheap identity of the weights or file behind the model (sizes and mtimes)."""
        path = self.config.model_path
        if path is None or not Path(path).exists():
            return None
        from qbench.core.provenance import fingerprint_path
        return fingerprint_path(Path(path))

    def close(self) -> None:
        """Release resources (GPU memory, worker processes). An optional hook: a model that
        holds none keeps this one."""
        return None


def predictions_from_texts(samples: Sequence[Sample], texts: Sequence[str | None],
                           latency_s: float, errors: Sequence[str | None] | None = None,
                           extras: Sequence[dict] | None = None) -> list[Prediction]:
    """Turn generated texts into predictions through the protocol parser: the one path every
    text-generating adapter (local VLM, vLLM, HTTP endpoint) shares."""
    out = []
    per_sample = latency_s / max(len(samples), 1)
    for i, (sample, text) in enumerate(zip(samples, texts, strict=True)):
        extra = extras[i] if extras else {}
        if text is None:
            error = errors[i] if errors else "no output"
            out.append(Prediction(task=sample.task, sample_id=sample.id, status="model_error",
                                  error=error, latency_s=per_sample, extra=extra))
            continue
        answer = parse_answer(text, sample.kind)
        out.append(Prediction(
            task=sample.task, sample_id=sample.id, status="ok" if answer.ok else "unparsed",
            score=answer.score, distortion_class=answer.distortion_class,
            severity=answer.severity, choice=answer.choice, text=text, error=answer.error,
            latency_s=per_sample, extra=extra))
    return out


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
