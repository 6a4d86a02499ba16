"""`qbench report RUN ...`: HTML and markdown report of one or more runs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from qbench.cli.compare import add_bootstrap_options
from qbench.results.folder import RunView
from qbench.results.published import load_published
from qbench.results.report import build_report, write_report


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    runs = [RunView.load(path).require_tasks() for path in args.runs]
    if len({r.run_id for r in runs}) != len(runs):
        raise ValueError("the same run was given twice")
    published = []
    if args.published:
        published = load_published()
    report = build_report(runs, published=published, plcc=args.plcc, resamples=args.resamples,
                          level=args.level, seed=args.seed)
    html_path, md_path = write_report(report, args.output or runs[0].path / "report")
    for note in report.notes:
        console.print(f"[yellow]{escape(note)}[/]", soft_wrap=True, highlight=False)
    console.print(f"wrote {html_path}\nwrote {md_path}")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="HTML + markdown report of one or more runs")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    p.add_argument("--output", type=Path,
                   help="report folder (default: RUN/report of the first run)")
    p.add_argument("--published", action=argparse.BooleanOptionalAction, default=True,
                   help="set the published figures beside the runs in the paper tables "
                        "(default: yes)")
    p.add_argument("--plcc", choices=("raw", "logistic"), default="raw",
                   help="which PLCC the paper tables' PLCC columns hold")
    add_bootstrap_options(p)
    p.set_defaults(func=cmd_report)
