"""Results on disk: the leaderboard CSV (one row per model × task) and its printed forms."""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pandas as pd

KEY_COLUMNS = ["source", "run_id", "model", "task", "split", "kind", "n", "n_ok", "parsed_fraction"]
# Shown first when present; any other scalar metric follows in alphabetical order.
METRIC_ORDER = ["plcc", "plcc_logistic", "srcc", "krcc", "rmse", "rmse_logistic",
                "class_acc_mean", "level_acc_mean", "accuracy", "acc", "reg_acc", "gen_acc"]


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


def leaderboard_row(run_id: str, model: str, metrics: dict[str, Any]) -> dict[str, Any]:
    flat = flatten({k: v for k, v in metrics.items() if k not in ("notes", "source", "wall_s", "ci")})
    for name, interval in (metrics.get("ci") or {}).items():
        flat[f"{name}_ci_low"], flat[f"{name}_ci_high"] = interval["low"], interval["high"]
    return {"source": "measured", "run_id": run_id, "model": model, **flat,
            "updated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")}


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in KEY_COLUMNS + METRIC_ORDER if c in frame.columns]
    rest = sorted(c for c in frame.columns if c not in first and c != "updated")
    return frame[first + rest + (["updated"] if "updated" in frame.columns else [])]


def read_leaderboard(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=KEY_COLUMNS)
    return pd.read_csv(path)


def update_leaderboard(path: Path, run_id: str, model: str, task_metrics: list[dict]) -> pd.DataFrame:
    """Insert or replace this run's rows (keyed by run id and task); write atomically."""
    frame = read_leaderboard(path)
    new = pd.DataFrame([leaderboard_row(run_id, model, m) for m in task_metrics])
    if len(frame):
        replaced = frame.set_index(["run_id", "task"]).index.isin(new.set_index(["run_id", "task"]).index)
        frame = pd.concat([frame[~replaced], new], ignore_index=True)
    else:
        frame = new
    frame = order_columns(frame).sort_values(["task", "model", "run_id"], kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return frame


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
    """The columns worth printing: keys and headline metrics that have a value somewhere."""
    wanted = ["model", "task", "split", "n", "parsed_fraction"] + METRIC_ORDER
    return [c for c in wanted if c in frame.columns and frame[c].notna().any()]


def format_table(frame: pd.DataFrame, fmt: str = "simple", columns: list[str] | None = None) -> str:
    from tabulate import tabulate
    columns = columns or summary_columns(frame)
    view = frame[columns].copy()
    for col in view.columns:
        if pd.api.types.is_float_dtype(view[col]):
            view[col] = view[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                      else f"{v:.4f}")
    return tabulate(view.fillna("").values.tolist(), headers=list(view.columns), tablefmt=fmt)
