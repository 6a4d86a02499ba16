"""`qbench compare RUN_A RUN_B`: does run A beat run B on each task? A paired bootstrap of the
metric difference on the samples both runs answered (qbench.uncertainty).

Also the read-only view of a run folder (manifest, metrics, predictions with their ground truth)
that `qbench report` shares.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from .records import Prediction, Sample
from .registry import get_task
from .task import DataError, ModelConvention, Task
from .uncertainty import (DEFAULT_LEVEL, DEFAULT_RESAMPLES, PairedDifference, paired_bootstrap,
                          task_statistics)

# Sample fields the runner stores as `truth` beside each prediction
TRUTH_FIELDS = ("mos", "mos_norm", "distortion_class", "severity", "choice", "group")


@dataclass
class RunRecord:
    """A finished (or interrupted) run as found on disk."""

    path: Path
    run_id: str
    model: str
    convention: ModelConvention
    metrics: dict[str, dict[str, Any]]
    rows: dict[str, dict[str, dict[str, Any]]]    # task -> sample id -> predictions.jsonl row
    task_facts: dict[str, dict[str, Any]] = field(default_factory=dict)   # manifest "tasks"
    notes: list[str] = field(default_factory=list)

    def lower_better(self, task: str) -> bool:
        """The ground-truth direction the run loaded for a task (stored in its manifest)."""
        return bool(self.task_facts.get(task, {}).get("lower_better", False))

    @property
    def label(self) -> str:
        return f"{self.model} ({self.run_id})"

    def tasks(self) -> list[str]:
        """Tasks with metrics, in the order the run wrote them."""
        return [name for name in self.metrics if name in self.rows]

    def kind(self, task: str) -> str:
        return str(self.metrics[task].get("kind") or get_task(task).kind)

    def samples(self, task: str) -> list[Sample]:
        """The task's samples rebuilt from the ground truth stored beside each prediction."""
        kind = self.kind(task)
        return [Sample(id=sid, task=task, kind=kind, images=(),
                       **{k: v for k, v in (row.get("truth") or {}).items() if k in TRUTH_FIELDS})
                for sid, row in self.rows.get(task, {}).items()]

    def predictions(self, task: str) -> dict[str, Prediction]:
        return {sid: Prediction.from_json(row) for sid, row in self.rows.get(task, {}).items()}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None


def read_predictions(path: Path) -> tuple[dict[str, dict[str, dict[str, Any]]], int]:
    """predictions.jsonl by task and sample id (a later line for a sample replaces an earlier
    one, as on resume). Read-only: a torn last line (a run killed mid-write, or still running)
    is skipped and counted, never truncated; a bad line elsewhere is a DataError."""
    if not path.is_file():
        raise DataError(f"{path.parent} has no predictions.jsonl")
    lines = path.read_bytes().split(b"\n")
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    torn = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)   # no newline after it: the writer had not finished it
        try:
            row = json.loads(line)
            task, sample_id = row["task"], row["sample_id"]
            row["status"]
        except (ValueError, KeyError, TypeError):
            if last:
                torn += 1
                continue
            raise DataError(f"{path} line {number} is not a prediction record") from None
        rows.setdefault(task, {})[sample_id] = row
    return rows, torn


def load_run(path: Path) -> RunRecord:
    """A run folder; FileNotFoundError / DataError (one line) when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder not found: {path}")
    if not (path / "manifest.json").is_file():
        raise DataError(f"{path} is not a run folder (no manifest.json)")
    manifest = _read_json(path / "manifest.json")
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    rows, torn = read_predictions(path / "predictions.jsonl")
    convention = manifest.get("model_convention") or {}
    score_range = convention.get("score_range")
    record = RunRecord(
        path=path, run_id=str(manifest.get("run_id") or path.name),
        model=str(manifest.get("model", "?")),
        convention=ModelConvention(bool(convention.get("lower_better", False)),
                                   tuple(map(float, score_range)) if score_range else None),
        metrics=metrics if isinstance(metrics, dict) else {}, rows=rows,
        task_facts=manifest.get("tasks") or {})
    if torn:
        record.notes.append(f"{path / 'predictions.jsonl'}: skipped an unfinished last line")
    if not record.tasks():
        raise DataError(f"{path} has no scored task yet (metrics.json lists none with predictions)")
    return record


# ------------------------------------------------------------------------ comparing two runs

@dataclass(frozen=True)
class TaskComparison:
    task: str
    metric: str
    result: PairedDifference
    dropped: dict[str, int]   # why samples of either run are not in the paired set, by reason


def paired_samples(task: Task, a: RunRecord, b: RunRecord) -> tuple[list[Sample], dict[str, int]]:
    """The samples both runs can be compared on, and how many were left out and why. Score
    tasks keep the samples both runs scored (a failure has no score to rank); classification
    tasks keep every shared sample (a failure is a wrong answer, as in the metrics)."""
    samples_a = {s.id: s for s in a.samples(task.name)}
    samples_b = {s.id: s for s in b.samples(task.name)}
    for sid in samples_a.keys() & samples_b.keys():
        if samples_a[sid] != samples_b[sid]:
            raise DataError(f"{task.name}: the runs disagree on the ground truth of sample {sid}: "
                            "they did not evaluate the same data")
    shared = [s for sid, s in samples_a.items() if sid in samples_b]
    dropped = {"only in A": len(samples_a) - len(shared), "only in B": len(samples_b) - len(shared)}
    if task.kind == "score":
        for side, run in (("A", a), ("B", b)):
            answers = run.predictions(task.name)
            kept = [s for s in shared if answers[s.id].ok and answers[s.id].score is not None]
            dropped[f"no score from {side}"] = len(shared) - len(kept)
            shared = kept
    return shared, {reason: n for reason, n in dropped.items() if n}


def compare_runs(a: RunRecord, b: RunRecord, tasks: list[str] | None = None, *,
                 resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                 seed: int = 0) -> list[TaskComparison]:
    """Paired bootstrap of every headline metric on every task both runs scored."""
    common = [t for t in a.tasks() if t in b.tasks()]
    if tasks:
        unknown = [t for t in tasks if t not in common]
        if unknown:
            raise DataError(f"task(s) {', '.join(unknown)} not in both runs "
                            f"(shared: {', '.join(common) or 'none'})")
        common = [t for t in common if t in tasks]
    if not common:
        raise DataError(f"{a.path} and {b.path} share no task")
    out = []
    for name in common:
        task = get_task(name)
        samples, dropped = paired_samples(task, a, b)
        _, stats_a = task_statistics(task, samples, a.predictions(name), a.convention,
                                     a.lower_better(name))
        _, stats_b = task_statistics(task, samples, b.predictions(name), b.convention,
                                     b.lower_better(name))
        for metric in stats_a:
            result = paired_bootstrap(stats_a[metric], stats_b[metric], len(samples),
                                      resamples=resamples, level=level, seed=seed)
            out.append(TaskComparison(name, metric, result, dropped))
    return out


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def comparison_rows(comparisons: list[TaskComparison]) -> list[dict[str, Any]]:
    """One flat row per task × metric (printing, CSV, reports)."""
    rows = []
    for c in comparisons:
        r = c.result
        rows.append({"task": c.task, "metric": c.metric, "n": r.n, "A": _number(r.a),
                     "B": _number(r.b), "A-B": _number(r.difference),
                     f"{r.level:.0%} CI": f"[{_number(r.low)}, {_number(r.high)}]",
                     "p": _number(r.p_value, 4), "verdict": r.verdict,
                     "left out": ", ".join(f"{n} {why}" for why, n in c.dropped.items())})
    return rows


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from tabulate import tabulate
    a, b = load_run(args.run_a), load_run(args.run_b)
    for note in a.notes + b.notes:
        console.print(f"[yellow]{note}[/]")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    rows = comparison_rows(compare_runs(a, b, tasks, resamples=args.resamples, level=args.level,
                                        seed=args.seed))
    print(f"A = {a.label}\nB = {b.label}\n"
          f"paired bootstrap, {args.resamples} resamples, seed {args.seed}\n")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0])))
    if args.csv:
        import pandas as pd
        pd.DataFrame(rows).to_csv(args.csv, index=False)
        console.print(f"wrote {args.csv}")
    return 0


def _resamples(text: str) -> int:
    value = int(text)
    if value < 100:
        raise argparse.ArgumentTypeError(f"use at least 100 resamples, got {value}")
    return value


def _level(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"confidence level must be in [0.5, 1), got {value}")
    return value


def add_bootstrap_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resamples", type=_resamples, default=DEFAULT_RESAMPLES)
    parser.add_argument("--level", type=_level, default=DEFAULT_LEVEL, help="confidence level")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("compare", help="paired bootstrap: does run A beat run B per task?")
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--tasks", help="comma-separated tasks (default: every task both runs have)")
    p.add_argument("--csv", type=Path, help="also write the table as CSV")
    add_bootstrap_options(p)
    p.set_defaults(func=cmd_compare)
