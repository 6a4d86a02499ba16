"""`qbench compare RUN_A RUN_B`: a paired bootstrap of every headline metric per task."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from qbench.results.compare import compare_runs, comparison_rows
from qbench.results.folder import RunView
from qbench.scoring.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from tabulate import tabulate
    a, b = (RunView.load(path).require_tasks() for path in (args.run_a, args.run_b))
    for note in a.notes + b.notes:
        console.print(f"[yellow]{escape(note)}[/]", soft_wrap=True, highlight=False)
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
