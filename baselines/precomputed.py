"""`precomputed`: predictions produced elsewhere, read from a CSV or JSONL file.

Columns: `image` (the path relative to the task's data folder, the sample id, or the bare
file name where that is unique) and the answer: `score` | `distortion_class` + `severity` |
`choice`. An optional `task` column lets one file serve many tasks. A sample without a row is
reported as missing; a row whose answer cannot be read is reported as unparsed. A file that gives
one image two different answers for the same task is refused, naming the image: which answer
was meant cannot be known.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from qbench import Model, ModelConfig, ModelError, Prediction, Sample, register_model
from qbench.protocol import CHOICES, canonical_class, canonical_level


def read_table(path: Path) -> pd.DataFrame:
    """The predictions file as strings; ModelError (one line) if it cannot be read."""
    if not path.is_file():
        raise ModelError(f"precomputed: predictions file not found: {path} (pass --model-path FILE)")
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            frame = pd.DataFrame(rows)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ModelError(f"precomputed: cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if "image" not in frame.columns:
        raise ModelError(f"precomputed: {path} has no 'image' column (columns: "
                         f"{', '.join(map(str, frame.columns)) or 'none'})")
    answers = {"score", "distortion_class", "choice"} & set(frame.columns)
    if not answers:
        raise ModelError(f"precomputed: {path} has no answer column (score, distortion_class + "
                         f"severity, or choice); columns: {', '.join(map(str, frame.columns))}")
    return frame


ANSWER_COLUMNS = ("score", "distortion_class", "severity", "choice")


def answer_of(row: dict[str, Any]) -> tuple[str, ...]:
    """A row's answer, as comparable text (a repeated row with the same answer is harmless)."""
    return tuple("" if _blank(row.get(c)) else str(row.get(c)).strip() for c in ANSWER_COLUMNS)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def row_prediction(sample: Sample, row: dict[str, Any]) -> Prediction:
    """Read one row's answer for a sample's kind; unreadable answers become 'unparsed'."""
    pred = Prediction(task=sample.task, sample_id=sample.id, text=json.dumps(row, default=str))
    if sample.kind == "score":
        try:
            pred.score = float(row.get("score"))
            if not math.isfinite(pred.score):
                raise ValueError
        except (TypeError, ValueError):
            pred.status, pred.error = "unparsed", f"score {row.get('score')!r} is not a number"
    elif sample.kind == "degradation":
        cls, level = canonical_class(row.get("distortion_class")), canonical_level(row.get("severity"))
        if cls is None or level is None:
            pred.status = "unparsed"
            pred.error = f"unreadable class/severity {row.get('distortion_class')!r}/{row.get('severity')!r}"
        else:
            pred.distortion_class, pred.severity = cls, "null" if cls == "null" else level
    else:
        choice = {c.lower(): c for c in CHOICES}.get(str(row.get("choice", "")).strip().lower())
        if choice is None:
            pred.status, pred.error = "unparsed", f"choice {row.get('choice')!r} is not one of {CHOICES}"
        pred.choice = choice
    return pred


@dataclass(frozen=True)
class PrecomputedOptions:
    lower_better: bool = False   # the file's scores rank lower-is-better (NIQE, BRISQUE, ...)
    mos_scale: bool = False      # the file's scores are on the 1-5 MOS scale (RMSE is reported)


@register_model("precomputed")
class PrecomputedModel(Model):
    """Predictions from a CSV/JSONL file (--model-path FILE)"""

    name = "precomputed"
    kinds = frozenset({"score", "degradation", "comparison"})
    needs_images = False
    Options = PrecomputedOptions
    options: PrecomputedOptions

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.model_path is None:
            raise ModelError("precomputed: pass the predictions file with --model-path FILE")
        frame = read_table(Path(config.model_path))
        self.lower_better = self.options.lower_better
        if self.options.mos_scale:
            self.score_range = (1.0, 5.0)
        self.rows: dict[str | None, dict[str, dict[str, Any]]] = {}
        self.basenames: dict[str | None, Counter] = {}
        for row in frame.to_dict("records"):
            task = None if _blank(row.get("task")) else str(row["task"])
            key = str(PurePosixPath(str(row["image"]).replace("\\", "/")))
            known = self.rows.setdefault(task, {})
            if key in known:
                if answer_of(known[key]) != answer_of(row):
                    raise ModelError(
                        f"precomputed: {config.model_path} gives {key} two different answers"
                        f"{f' for task {task}' if task else ''}: "
                        f"{'/'.join(filter(None, answer_of(known[key])))} and "
                        f"{'/'.join(filter(None, answer_of(row)))}; keep one row per image")
                continue
            known[key] = row
            self.basenames.setdefault(task, Counter())[PurePosixPath(key).name] += 1

    def settings(self) -> dict:
        return super().settings() | {"fingerprint": self.fingerprint()}

    def lookup(self, sample: Sample) -> dict[str, Any] | None:
        """Match on the sample id, then on ever shorter tails of its image path; the bare file
        name only where it is unique in the file."""
        for task in (sample.task, None):
            rows = self.rows.get(task)
            if not rows:
                continue
            if sample.id in rows:
                return rows[sample.id]
            parts = PurePosixPath(sample.images[0].replace("\\", "/")).parts if sample.images else ()
            for start in range(len(parts)):
                tail = str(PurePosixPath(*parts[start:]))
                if tail in rows and (start < len(parts) - 1 or self.basenames[task][tail] == 1):
                    return rows[tail]
        return None

    def predict(self, samples: Sequence[Sample], images: Sequence) -> list[Prediction]:
        out = []
        for sample in samples:
            row = self.lookup(sample)
            out.append(row_prediction(sample, row) if row is not None else
                       Prediction.failure(sample, "missing", "no row in the predictions file"))
        return out
