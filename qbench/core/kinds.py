"""The three kinds of question a task asks, declared once: which Sample fields hold the ground
truth, which Prediction fields the answer, the labels of a classification kind, and how truth
and answer read in a transcript. Scoring (qbench.scoring.metrics), the run folder, compare and
report look a kind up here instead of switching on its name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qbench.core import records
from qbench.core.protocol import CHOICES, CLASS_DISPLAY, CLASSES
from qbench.core.records import Prediction, Sample


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Kind:
    name: records.KindName
    truth_fields: tuple[str, ...]          # Sample fields stored beside each prediction
    answer_fields: tuple[str, ...]         # Prediction fields that hold the answer
    labels: tuple[str, ...] = ()           # classification labels (confusion matrix); () for scores
    label_names: tuple[str, ...] = ()      # how the labels are printed
    truth_label: Callable[[Sample], str | None] = lambda s: None
    answer_label: Callable[[Prediction], str | None] = lambda p: None
    truth_text: Callable[[Sample], str] = lambda s: ""
    answer_text: Callable[[Prediction], str] = lambda p: ""

    @property
    def classifies(self) -> bool:
        return bool(self.labels)

    def right(self, sample: Sample, prediction: Prediction | None) -> bool:
        """A classification answer is right when every answer field equals the truth's."""
        return (prediction is not None and prediction.ok
                and all(getattr(prediction, f) == getattr(sample, f) for f in self.answer_fields))


KINDS: dict[str, Kind] = {   # keyed by KindName
    "score": Kind(
        "score", truth_fields=("mos", "mos_norm", "group"), answer_fields=("score",),
        truth_text=lambda s: f"MOS {_number(s.mos)}" + (f" (norm {_number(s.mos_norm, 2)})"
                                                        if s.mos_norm is not None else ""),
        answer_text=lambda p: _number(p.score)),
    "degradation": Kind(
        "degradation", truth_fields=("distortion_class", "severity", "group"),
        answer_fields=("distortion_class", "severity"), labels=CLASSES,
        label_names=tuple(CLASS_DISPLAY[c] for c in CLASSES),
        truth_label=lambda s: s.distortion_class, answer_label=lambda p: p.distortion_class,
        truth_text=lambda s: f"{s.distortion_class} / {s.severity}",
        answer_text=lambda p: f"{p.distortion_class} / {p.severity}"),
    "comparison": Kind(
        "comparison", truth_fields=("choice", "group"), answer_fields=("choice",),
        labels=CHOICES, label_names=CHOICES,
        truth_label=lambda s: s.choice, answer_label=lambda p: p.choice,
        truth_text=lambda s: str(s.choice), answer_text=lambda p: str(p.choice)),
}


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; known: {', '.join(KINDS)}") from None
