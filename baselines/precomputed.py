"""`precomputed`: predictions produced elsewhere, read from a CSV, JSONL or JSON file (JSONL:
one object per line; a `.json` file holds one array of objects, or objects one per line).

Columns: `image` (the path relative to the task's data folder, the sample id, or the bare
file name where that is unique) and the answer: `score` | `distortion_class` + `severity` |
`choice`. An optional `task` column lets one file serve many tasks. A sample without a row is
reported as missing; a row whose answer cannot be read is reported as unparsed. A file that gives
one image two different answers for the same task is refused, naming the image: which answer
was meant cannot be known.
"""
from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from qbench import Model, ModelConfig, ModelError, Prediction, Sample, register_model
from qbench.core.protocol import CHOICES, canonical_class, canonical_level
from qbench.core.userfiles import (
    MAX_JSON_BYTES,
    UserFileError,
    parse_json,
    parse_jsonl,
    read_text,
    shown,
    shown_key,
    shown_names,
)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The predictions file's rows (CSV cells as text, JSON values as written); ModelError, one
    line naming the file (and the line or item), if it cannot be read."""
    where = f"predictions file {path}"
    if not path.exists():
        raise ModelError(f"precomputed: predictions file not found: {path} (pass --model-path "
                         f"FILE)")
    try:
        text = read_text(path, "predictions file", max_bytes=MAX_JSON_BYTES)
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            array = parse_json(text, where)
            rows = [(f"item {i}", _json_row(value, where, f"item {i}"))
                    for i, value in enumerate(array, start=1)]
        elif path.suffix.lower() in (".jsonl", ".json"):
            rows = [(f"line {n}", _json_row(value, where, f"line {n}"))
                    for n, value in parse_jsonl(text, where)]
        else:
            try:
                frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            except (ValueError, pd.errors.ParserError) as exc:
                raise UserFileError(where, f"not a readable CSV: "
                                           f"{str(exc).splitlines()[0]}") from None
            rows = [(f"row {i}", {str(key): value for key, value in row.items()})
                    for i, row in enumerate(frame.to_dict("records"), 1)]
    except UserFileError as exc:
        raise ModelError(f"precomputed: {exc}") from None
    columns = list(dict.fromkeys(key for _, row in rows for key in row))
    if "image" not in columns:
        raise ModelError(f"precomputed: {where} has no 'image' column (columns: "
                         f"{shown_names(columns)})")
    if not {"score", "distortion_class", "choice"} & set(columns):
        raise ModelError(f"precomputed: {where} has no answer column (score, distortion_class + "
                         f"severity, or choice); columns: {shown_names(columns)}")
    for label, row in rows:
        if _blank(row.get("image")):
            raise ModelError(f"precomputed: {where}: {label}: no image")
    return [row for _, row in rows]


def _json_row(value: Any, where: str, label: str) -> dict[str, Any]:
    """One JSON record, which must say in text which image (and task) it answers for."""
    if not isinstance(value, dict):
        raise UserFileError(where, f"{label}: expected an object (one per image), got "
                                   f"{type(value).__name__}")
    for key in ("image", "task"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise UserFileError(where, f"{label}: {key}: should be text, got "
                                       f"{shown(value[key])}")
    return value


ANSWER_COLUMNS = ("score", "distortion_class", "severity", "choice")


def answer_of(row: dict[str, Any]) -> tuple[str, ...]:
    """A row's answer, as comparable text (a repeated row with the same answer is harmless)."""
    return tuple("" if _blank(row.get(c)) else str(row.get(c)).strip() for c in ANSWER_COLUMNS)


def _blank(value: Any) -> bool:
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or str(value).strip() == "")


def row_prediction(sample: Sample, row: dict[str, Any]) -> Prediction:
    """Read one row's answer for a sample's kind; unreadable answers become 'unparsed'."""
    pred = Prediction(task=sample.task, sample_id=sample.id, text=json.dumps(row, default=str))
    if sample.kind == "score":
        value = row.get("score")
        try:
            # JSON true is not a score (float(True) would be 1.0), nor is a missing one
            if value is None or isinstance(value, bool):
                raise TypeError
            pred.score = float(value)
            if not math.isfinite(pred.score):
                raise ValueError
        except (TypeError, ValueError):
            pred.score = None
            pred.status, pred.error = "unparsed", f"score {shown(value)} is not a number"
    elif sample.kind == "degradation":
        # an absent class or severity is no answer (canonical_* read None and "" as "no
        # distortion", the protocol's words for it)
        words = [row.get(c) for c in ("distortion_class", "severity")]
        cls, level = canonical_class(words[0]), canonical_level(words[1])
        if cls is None or level is None or not {"distortion_class", "severity"} <= row.keys():
            pred.status = "unparsed"
            pred.error = f"unreadable class/severity {shown(words[0])}/{shown(words[1])}"
        else:
            pred.distortion_class, pred.severity = cls, "null" if cls == "null" else level
    else:
        choice = {c.lower(): c for c in CHOICES}.get(str(row.get("choice", "")).strip().lower())
        if choice is None:
            pred.status = "unparsed"
            pred.error = f"choice {shown(row.get('choice'))} is not one of {CHOICES}"
        pred.choice = choice
    return pred


@dataclass(frozen=True)
class PrecomputedOptions:
    lower_better: bool = False   # the file's scores rank lower-is-better (NIQE, BRISQUE, ...)
    mos_scale: bool = False      # the file's scores are on the 1-5 MOS scale (RMSE is reported)


@register_model("precomputed")
class PrecomputedModel(Model):
    """Predictions from a CSV/JSONL/JSON file (--model-path FILE)"""

    name = "precomputed"
    kinds = frozenset({"score", "degradation", "comparison"})
    needs_images = False
    Options = PrecomputedOptions
    options: PrecomputedOptions

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.model_path is None:
            raise ModelError("precomputed: pass the predictions file with --model-path FILE")
        rows = read_rows(Path(config.model_path))
        self.lower_better = self.options.lower_better
        if self.options.mos_scale:
            self.score_range = (1.0, 5.0)
        self.rows: dict[str | None, dict[str, dict[str, Any]]] = {}
        self.basenames: dict[str | None, Counter] = {}
        for row in rows:
            task = None if _blank(row.get("task")) else str(row["task"])
            key = str(PurePosixPath(str(row["image"]).replace("\\", "/")))
            known = self.rows.setdefault(task, {})
            if key in known:
                if answer_of(known[key]) != answer_of(row):
                    raise ModelError(
                        f"precomputed: {config.model_path} gives {shown_key(key)} two different "
                        f"answers{f' for task {shown_key(task)}' if task else ''}: "
                        f"{shown_key('/'.join(filter(None, answer_of(known[key]))))} and "
                        f"{shown_key('/'.join(filter(None, answer_of(row))))}; keep one row per "
                        f"image")
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
            image = sample.images[0].replace("\\", "/") if sample.images else ""
            parts = PurePosixPath(image).parts if image else ()
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
