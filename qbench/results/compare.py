"""`qbench compare RUN_A RUN_B`: does run A beat run B on each task? A paired bootstrap of every
headline metric's difference on the samples both runs answered (qbench.scoring.metrics declares the
metrics and how each is resampled; qbench.results.folder reads the folders)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qbench.core.task import DataError
from qbench.results.folder import RunView
from qbench.scoring.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from qbench.scoring.metrics import Difference, Scored, paired_differences


@dataclass(frozen=True)
class TaskComparison:
    task: str
    difference: Difference
    dropped: dict[str, int]   # why samples of either run are not in the paired set, by reason


def paired_scored(task: str, a: RunView, b: RunView) -> tuple[Scored, Scored, dict[str, int]]:
    """Both runs' scoring inputs on the samples they can be compared on, and how many were left
    out and why. Score tasks keep the samples both runs scored (a failure has no score to rank);
    classification kinds keep every shared sample (a failure is a wrong answer, as in the
    metrics)."""
    scored_a, scored_b = a.scored(task), b.scored(task)
    if scored_a.kind != scored_b.kind:
        raise DataError(f"{task}: the runs scored it as different kinds")
    samples_a = {s.id: s for s in scored_a.samples}
    samples_b = {s.id: s for s in scored_b.samples}
    for sid in samples_a.keys() & samples_b.keys():
        if samples_a[sid] != samples_b[sid]:
            raise DataError(f"{task}: the runs disagree on the ground truth of sample {sid}: "
                            "they did not evaluate the same data")
    shared = [sid for sid in samples_a if sid in samples_b]
    dropped = {"only in A": len(samples_a) - len(shared), "only in B": len(samples_b) - len(shared)}
    if not scored_a.kind.classifies:
        for side, scored in (("A", scored_a), ("B", scored_b)):
            answered = set(scored.restricted(shared).scored_ids)
            kept = [sid for sid in shared if sid in answered]
            dropped[f"no score from {side}"] = len(shared) - len(kept)
            shared = kept
    return (scored_a.restricted(shared), scored_b.restricted(shared),
            {reason: n for reason, n in dropped.items() if n})


def compare_runs(a: RunView, b: RunView, tasks: list[str] | None = None, *,
                 resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                 seed: int = 0) -> list[TaskComparison]:
    """Paired bootstrap of every headline metric on every task both runs scored."""
    common = [t for t in a.tasks() if t in b.tasks()]
    if tasks:
        unknown = [t for t in tasks if t not in common]
        if unknown:
            why = [note for run in (a, b) for t in unknown if (note := run.left_out.get(t))]
            raise DataError(f"task(s) {', '.join(unknown)} not in both runs "
                            f"(shared: {', '.join(common) or 'none'}"
                            + "".join(f"; {note}" for note in why) + ")")
        common = [t for t in common if t in tasks]
    if not common:
        raise DataError(f"{a.path} and {b.path} share no task")
    out = []
    for name in common:
        scored_a, scored_b, dropped = paired_scored(name, a, b)
        out += [TaskComparison(name, difference, dropped) for difference in
                paired_differences(scored_a, scored_b, resamples=resamples, level=level, seed=seed)]
    return out


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def comparison_rows(comparisons: list[TaskComparison]) -> list[dict[str, Any]]:
    """One flat row per task × metric (printing, CSV, reports)."""
    rows = []
    for c in comparisons:
        r = c.difference.result
        rows.append({"task": c.task, "metric": c.difference.metric, "n": r.n, "A": _number(r.a),
                     "B": _number(r.b), "A-B": _number(r.difference),
                     f"{r.level:.0%} CI": f"[{_number(r.low)}, {_number(r.high)}]",
                     "p": _number(r.p_value, 4), "verdict": c.difference.verdict,
                     "left out": ", ".join(f"{n} {why}" for why, n in c.dropped.items())})
    return rows










