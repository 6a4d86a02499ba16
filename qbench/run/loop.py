"""The prediction loop `qbench run` and `qbench score` share: the samples still to do are
decoded ahead (qbench.data.images), each batch's inputs built ahead of its turn (Model.prepare),
predicted, annotated and written to the prediction log; samples that get no answer are counted
against the failure budget, and a model that fails past it stops the loop."""
from __future__ import annotations

import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from qbench.core.model import Model, ModelError
from qbench.core.records import Prediction, Sample
from qbench.data.images import Finish, prefetch_batches
from qbench.results.folder import PredictionLog, RunFolder

# Exceptions a second try may not meet again: a dropped connection, a timeout, memory.
TRANSIENT = (OSError, TimeoutError, ConnectionError, MemoryError)


class RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} samples/s" if speed else "… samples/s", style="cyan")


def progress_bars(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), RateColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=False)


# Statuses of samples that never got an answer from the model: the measured set is then not the
# published one. (An unparsed answer is the model's own answer, counted in parsed_fraction.)
LOST = ("image_error", "model_error", "missing")


LOST_WORDS = {"image_error": "image errors (missing, unreadable, refused or undecodable "
                             "images)", "model_error": "model errors",
              "missing": "samples with no prediction"}


def lost_counts(failure_counts: dict[str, int]) -> dict[str, int]:
    return {status: failure_counts[status] for status in LOST if failure_counts.get(status)}


def lost_problem(failure_counts: dict[str, int], total: int) -> str | None:
    """The line that says how many samples never got an answer, and why."""
    lost = lost_counts(failure_counts)
    if not lost:
        return None
    causes = ", ".join(f"{n:,} {LOST_WORDS[status]}" for status, n in lost.items())
    return (f"{sum(lost.values()):,} of {total:,} samples got no answer from the model: "
            f"{causes}; their ids are in metrics.json")


@dataclass
class FailureBudget:
    """Counts a task's model errors against --max-failure-rate while it runs. Past it, the task
    stops: every further batch would cost time (or money) for a result that cannot be used.
    (Image errors cost no model time; they count in the task's final judgment,
    `failure_reason`, with the model errors.)"""

    samples: int
    rate: float
    failed: int = 0
    first: str | None = None

    @property
    def allowed(self) -> int:
        return int(self.rate * self.samples)

    @property
    def exceeded(self) -> bool:
        return self.failed > self.allowed

    def count(self, errors: list[str]) -> None:
        if errors and self.first is None:
            self.first = errors[0]
        self.failed += len(errors)

    def reason(self) -> str:
        return (f"{self.failed} model errors, more than --max-failure-rate {self.rate:g} of "
                f"{self.samples} samples allows ({self.allowed}); first: {self.first}")


def failure_reason(stopped: str | None, lost: dict[str, int], usable: int, total: int,
                   rate: float, unit: str) -> str | None:
    """Why a task (or a `qbench score` command) failed, None if it did not: stopped past the
    failure budget, `lost` answers (counts by status: model, image errors, ...) past
    --max-failure-rate at the end (earlier commands' rows counted), or not one usable answer
    among `total` (samples or images: `unit`)."""
    if stopped:
        return stopped
    lost = lost_counts(lost)
    if sum(lost.values()) > rate * total:
        causes = ", ".join(f"{n} {status.replace('_', ' ')}s" for status, n in lost.items())
        return (f"{sum(lost.values())} of {total} {unit}s got no answer ({causes}), more than "
                f"--max-failure-rate {rate:g} allows")
    if total and not usable:
        return f"no {unit} has a usable answer"
    return None


def predict_batch(model: Model, batch: list[Sample], images: list, folder: RunFolder,
                  task: str, budget: FailureBudget,
                  prepared: Future[Finish] | None = None) -> list[dict[str, Any]]:
    """The model's answers for one batch as prediction rows (`prepared`: the model's prepare
    of this batch, run ahead by prefetch_batches). An exception costs the batch's
    samples, recorded as model errors; its traceback goes to errors.log the first time, and
    whether a second try could succeed (a transient error) is kept with each row."""
    try:
        finish = prepared.result() if prepared is not None else model.prepare(batch, images)
        predicted = finish()
        if len(predicted) != len(batch):
            raise ModelError(f"returned {len(predicted)} predictions for {len(batch)} samples")
        rows = [p.to_json() for p in predicted]
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # one bad batch costs its samples, counted, not the run
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        transient = isinstance(exc, TRANSIENT) or "out of memory" in str(exc).lower()
        if budget.first is None:
            path = folder.record_error(f"task {task}, batch of {len(batch)} samples",
                                       traceback.format_exc())
            budget.first = f"{message} (traceback in {path})"
        rows = [Prediction.failure(s, "model_error", message).to_json() | {"transient": transient}
                for s in batch]
    budget.count([r["error"] for r in rows if r["status"] == "model_error"])
    return rows


def predict_all(todo: list[Sample], model: Model, log: PredictionLog, folder: RunFolder, *,
                label: str, budget: FailureBudget, batch_size: int, workers: int,
                max_pixels: int, annotate: Callable[[Sample], dict[str, Any]],
                advance: Callable[[int], None]) -> None:
    """Predict `todo` in batches and write each batch's records to `log`, each with what
    `annotate` adds for its sample (the ground truth, an image file's state); `advance` is told
    how many samples each batch finished. An image that cannot be read is an `image_error`
    record, a batch the model fails a `model_error` record per sample; past the budget's model
    errors the loop stops (its traceback is in the folder's errors.log under `label`)."""
    by_id = {s.id: s for s in todo}
    for batch in prefetch_batches(todo, batch_size, decode=model.needs_images, workers=workers,
                                  max_pixels=max_pixels, prepare=model.prepare):
        rows = [Prediction.failure(by_id[sid], "image_error", err).to_json()
                for sid, err in batch.errors.items()]
        if batch.samples:
            rows += predict_batch(model, batch.samples, batch.images, folder, label, budget,
                                  batch.prepared)
        log.write([row | annotate(by_id[row["sample_id"]]) for row in rows])
        advance(len(rows))
        if budget.exceeded:
            break
