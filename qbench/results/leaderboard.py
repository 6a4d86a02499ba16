"""The leaderboard: one row per run x task, derived from the run folders of an output folder
(never edited in place, so no concurrent writer can lose another's rows), and its printed forms.
A task that failed has no row; a task whose measured split differs from the published one has
`deviates` set."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from qbench.core.files import locked, write_text
from qbench.results.folder import MANIFEST, RunFolder, RunFolderError
from qbench.scoring.metrics import headline_names

LEADERBOARD = "leaderboard.csv"
KEY_COLUMNS = ["source", "run_id", "model", "task", "split", "kind", "status", "deviates",
               "subset", "n", "n_ok", "parsed_fraction"]
# Columns shown first when present (headline metrics, in registry order, then the raw RMSEs);
# any other scalar metric follows in alphabetical order.
SKIPPED = ("notes", "source", "split_source", "wall_s", "ci", "problems", "failure_reason",
           "failures", "failure_counts", "confusion", "expected_count", "n_available", "subset",
           "records_sha256", "digest")


def metric_order() -> list[str]:
    return headline_names() + ["rmse", "rmse_logistic"]


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar metrics as flat columns: {"class_acc": {"noise": 1.0}} -> {"class_acc.noise": 1.0}.
    Lists (failure ids, confusion matrices) stay in metrics.json."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if key not in ("failures", "failure_counts", "confusion"):
                out.update(flatten(value, name + "."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
    return out


def leaderboard_row(run_id: str, model: str, metrics: dict[str, Any], updated: str | None
                    ) -> dict[str, Any]:
    flat = flatten({k: v for k, v in metrics.items() if k not in SKIPPED})
    for name, interval in (metrics.get("ci") or {}).items():
        flat[f"{name}_ci_low"], flat[f"{name}_ci_high"] = interval["low"], interval["high"]
    return {"source": "measured", "run_id": run_id, "model": model, **flat,
            "deviates": bool(metrics.get("problems")), "subset": metrics.get("subset") or "",
            "updated": (updated or "")[:16]}


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in KEY_COLUMNS + metric_order() if c in frame.columns]
    rest = sorted(c for c in frame.columns if c not in first and c != "updated")
    return frame[first + rest + (["updated"] if "updated" in frame.columns else [])]


def read_leaderboard(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=KEY_COLUMNS)
    try:
        return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not a readable leaderboard CSV: "
                             f"{str(exc).splitlines()[0]}") from None


def leaderboard_rows(output_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every run folder under `output_dir` (tasks that did not fail, whose figures
    check out against the folder's predictions: RunFolder.verified), and a note for each folder
    or task left out."""
    rows, notes = [], []
    for path in sorted(output_dir.glob(f"*/{MANIFEST}")):
        folder = RunFolder(path.parent)
        try:
            manifest, metrics, left_out = folder.verified()
        except RunFolderError as exc:
            notes.append(f"leaderboard: left out {folder.path}: "
                         f"{str(exc).removeprefix(str(folder.path) + ': ')}")
            continue
        notes += [f"leaderboard: {note}" for note in left_out.values()]
        rows += [leaderboard_row(manifest.run_id, manifest.model, m,
                                 manifest.finished or manifest.started)
                 for m in metrics.values() if m["status"] != "failed"]
    return rows, notes


def rebuild_leaderboard(output_dir: Path) -> tuple[Path, list[str]]:
    """Write `output_dir/leaderboard.csv` anew from the run folders, under a lock and through a
    temporary file of its own."""
    path = output_dir / LEADERBOARD
    output_dir.mkdir(parents=True, exist_ok=True)
    with locked(output_dir / f".{LEADERBOARD}.lock", f"leaderboard {path}", wait=True):
        for stale in output_dir.glob(f".{LEADERBOARD}.*.tmp"):   # a killed writer's
            stale.unlink(missing_ok=True)
        rows, notes = leaderboard_rows(output_dir)
        frame = pd.DataFrame(rows, columns=None if rows else KEY_COLUMNS)
        if rows:
            frame = order_columns(frame).sort_values(["task", "model", "run_id"], kind="stable")
        write_text(path, frame.to_csv(index=False))
    return path, notes


def with_published(measured: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Measured rows and published rows (source "published") in one table, each task's rows
    together, measured first. Counts stay integers where published rows have none."""
    if published.empty:
        return measured
    frame = pd.concat([measured, published], ignore_index=True) if len(measured) else published
    counts = [c for c in ("n", "n_ok")
              if c in frame and c in measured and pd.api.types.is_integer_dtype(measured[c])]
    for column in counts:
        frame[column] = frame[column].astype("Int64").astype(object)
    return order_columns(frame).sort_values(["task", "source", "model"], kind="stable")


def summary_columns(frame: pd.DataFrame) -> list[str]:
    """The columns worth printing: keys (the run id and status tell a run on a subset or on
    other samples from one as published) and headline metrics that have a value somewhere."""
    wanted = ["model", "run_id", "task", "split", "status", "n", "parsed_fraction"] + metric_order()
    return [c for c in wanted if c in frame.columns and frame[c].notna().any()]


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(frame: pd.DataFrame, fmt: str = "simple", columns: list[str] | None = None) -> str:
    """The frame's columns as a table; a metric with a bootstrap interval (--ci) is shown with
    it: 0.8738 [0.851, 0.893]."""
    from tabulate import tabulate
    columns = columns or summary_columns(frame)
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column in columns:
            text = _shown(record.get(column))
            low, high = record.get(f"{column}_ci_low"), record.get(f"{column}_ci_high")
            if text and isinstance(low, float) and isinstance(high, float) \
                    and math.isfinite(low) and math.isfinite(high):
                text += f" [{low:.3f}, {high:.3f}]"
            cells.append(text)
        rows.append(cells)
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) and c != "deviates" else "left"
             for c in columns]
    return tabulate(rows, headers=[HEADINGS.get(c, c) for c in columns], tablefmt=fmt,
                    disable_numparse=True, colalign=align)


# Shorter headings of the printed tables (the CSV keeps the column names)
HEADINGS = {"parsed_fraction": "parsed", "plcc_logistic": "plcc_log", "rmse_logistic": "rmse_log",
            "class_acc_mean": "class_acc", "level_acc_mean": "level_acc"}
