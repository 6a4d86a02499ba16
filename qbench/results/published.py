"""Published figures (REFERENCE §5) from `published.csv`: one row per method × dataset × metric,
with the protocol that produced it (training set, raw or logistic PLCC) and its paper and table.

Datasets are qbench task names (plus `mean`: a paper's own AVG column, as printed) and metrics
are leaderboard column names, so published rows sit beside measured ones in one table. Each PLCC
goes to the column of its convention and no other: raw to `plcc`, fitted through DeQA-Score's
logistic to `plcc_logistic`, not stated by its paper to `plcc_unstated`.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qbench.core.registry import load_plugins
from qbench.core.task import DataError

# The published-figure files of the installed plugins (`register_published`): qbench's own
# models register baselines/published.csv
PUBLISHED_FILES: list[Path] = []
COLUMNS = ("method", "dataset", "metric", "value", "training_set", "plcc_convention",
           "reference", "note")
PLCC_CONVENTIONS = ("raw", "logistic", "unstated")
PLCC_COLUMN = {"raw": "plcc", "logistic": "plcc_logistic", "unstated": "plcc_unstated"}
PAPER_MEAN = "mean"   # the dataset name of a paper's AVG column
# Leaderboard columns only published rows fill, shown after the metrics: a PLCC whose paper does
# not state its convention (its own column, never `plcc`), then where the row comes from.
PROTOCOL_COLUMNS = ["plcc_unstated", "training_set", "plcc_convention", "reference"]


@dataclass(frozen=True)
class PublishedFigure:
    method: str
    dataset: str           # a qbench task name, or PAPER_MEAN for a paper's AVG column
    metric: str            # a leaderboard column name (plcc, srcc, class_acc.noise, acc, ...)
    value: float           # in [0, 1]; percentages are stored divided by 100
    training_set: str      # "koniq", "koniq+spaq+kadid", "none", "unstated", ...
    plcc_convention: str   # PLCC_CONVENTIONS for a PLCC, "" for other metrics
    reference: str         # paper and table
    note: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return self.method, self.dataset, self.metric, self.training_set, self.reference

    @property
    def column(self) -> str:
        """The leaderboard column this figure belongs in: a PLCC by its convention."""
        return PLCC_COLUMN[self.plcc_convention] if self.metric == "plcc" else self.metric


def parse_figure(row: dict[str, str], where: str) -> PublishedFigure:
    """One CSV row as a figure; DataError naming the line when a field is wrong."""
    fields = {name: (row.get(name) or "").strip() for name in COLUMNS}
    for name in ("method", "dataset", "metric", "training_set", "reference"):
        if not fields[name]:
            raise DataError(f"{where}: empty {name}")
    try:
        value = float(fields["value"])
    except ValueError:
        raise DataError(f"{where}: value {fields['value']!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise DataError(f"{where}: value {value} is outside [0, 1]")
    convention = fields["plcc_convention"]
    if fields["metric"] == "plcc" and convention not in PLCC_CONVENTIONS:
        raise DataError(f"{where}: a PLCC needs plcc_convention in {PLCC_CONVENTIONS}, "
                        f"got {convention!r}")
    if fields["metric"] != "plcc" and convention:
        raise DataError(f"{where}: plcc_convention is set on a {fields['metric']} figure")
    return PublishedFigure(**{k: v for k, v in fields.items() if k != "value"}, value=value)


def register_published(path: Path) -> None:
    """Add a plugin's file of published figures (the COLUMNS above) to every table."""
    if path not in PUBLISHED_FILES:
        PUBLISHED_FILES.append(path)


def load_published(path: Path | None = None) -> list[PublishedFigure]:
    """Every figure of `path`, or of every registered file; DataError (one line) if a file is
    missing or malformed."""
    if path is None:
        load_plugins()
        return [figure for registered in PUBLISHED_FILES for figure in load_published(registered)]
    if not path.is_file():
        raise DataError(f"published figures: no such file {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        figures = [parse_figure(row, f"{path} line {reader.line_num}") for row in reader]
    seen: set[tuple[str, ...]] = set()
    for figure in figures:
        if figure.key in seen:
            raise DataError(f"{path}: {' / '.join(figure.key)} appears twice")
        seen.add(figure.key)
    return figures


def leaderboard_rows(figures: list[PublishedFigure],
                     tasks: Collection[str] | None = None) -> pd.DataFrame:
    """Published figures as leaderboard rows (source "published"): one row per method × task ×
    training set × reference, metrics as columns. `tasks` keeps only those tasks."""
    rows: dict[tuple[str, str, str, str], dict] = {}
    for figure in figures:
        if tasks is not None and figure.dataset not in tasks:
            continue
        key = (figure.method, figure.dataset, figure.training_set, figure.reference)
        row = rows.setdefault(key, {
            "source": "published", "model": figure.method, "task": figure.dataset,
            "training_set": figure.training_set, "plcc_convention": "",
            "reference": figure.reference})
        row[figure.column] = figure.value
        if figure.metric == "plcc":
            row["plcc_convention"] = figure.plcc_convention
    return pd.DataFrame(list(rows.values()))

