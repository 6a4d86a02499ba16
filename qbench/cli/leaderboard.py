"""`qbench leaderboard`: the rows of every run folder, or the papers' tables, beside the
published figures."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from qbench.core.options import names
from qbench.core.registry import task_names
from qbench.results.leaderboard import (
    format_table,
    read_leaderboard,
    rebuild_leaderboard,
    summary_columns,
    with_published,
)
from qbench.results.published import PROTOCOL_COLUMNS, leaderboard_rows, load_published
from qbench.results.tables import paper_table, render


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    path, notes = rebuild_leaderboard(args.output)
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]", soft_wrap=True)
    frame = read_leaderboard(path)
    tasks = task_names(args.tasks) if args.tasks else None
    if args.layout != "rows":
        return print_paper_table(args, frame, tasks, console)
    if tasks:
        frame = frame[frame["task"].isin(tasks)]
    if args.published:
        frame = with_published(frame, leaderboard_rows(load_published(),
                                                       tasks or set(frame["task"])))
    if frame.empty:
        console.print(f"no results in {path}: run `qbench run` first")
        return 1
    columns = summary_columns(frame)
    if args.published and (frame["source"] == "published").any():
        columns = ["source", *columns, *[c for c in PROTOCOL_COLUMNS if c in frame]]
    fmt = table_format(args)
    text = (frame.to_csv(index=False).rstrip("\n") if fmt == "csv"   # every column
            else format_table(frame, ROWS_FORMATS[fmt], columns))
    return show(text, args.save, console)


# `--format` of the rows layout as tabulate names it
ROWS_FORMATS = {"text": "simple", "markdown": "github", "latex": "latex_booktabs"}


SUFFIX_FORMATS = {".csv": "csv", ".md": "markdown", ".tex": "latex", ".txt": "text"}


def table_format(args: argparse.Namespace) -> str:
    """--format, else what --save's suffix says, else text."""
    if args.format:
        return str(args.format)
    return SUFFIX_FORMATS.get(args.save.suffix.lower(), "text") if args.save else "text"


def show(text: str, save: Path | None, console: Console) -> int:
    """Print a table and, with --save, write the same text to the file."""
    print(text)
    if save:
        save.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {save}")
    return 0


def print_paper_table(args: argparse.Namespace, frame, tasks: list[str] | None,
                      console: Console) -> int:
    """`--layout paper|degradation|sriqa`: models down, datasets across, as the papers print."""
    published = load_published() if args.published else []
    options: dict = {}
    if args.layout == "paper":
        options = {"datasets": tasks, "plcc": args.plcc}
    elif args.layout == "degradation":
        options = {"task": tasks[0] if tasks else None}
    else:
        options = {"plcc": args.plcc} | ({"tasks": tasks} if tasks else {})
    table = paper_table("score" if args.layout == "paper" else args.layout, frame, published,
                        **options)
    if not table.rows:
        console.print(f"no measured or published figures for this table in {args.output}")
        return 1
    return show(render(table, table_format(args)), args.save, console)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("leaderboard", help="print and export the leaderboard")
    p.add_argument("--output", type=Path, default=Path("results"), metavar="DIR",
                   help="the folder of run folders, as `qbench run --output` (default results/)")
    p.add_argument("--tasks", type=names, help="comma-separated tasks (paper layout: its "
                   "columns, default those of the paper table it mirrors)")
    p.add_argument("--layout", choices=("rows", "paper", "degradation", "sriqa"), default="rows",
                   help="rows: one row per run x task; paper: models down, datasets across "
                        "(Table 1); degradation: per-class accuracy (Table 2); sriqa: Table 6")
    p.add_argument("--format", choices=("text", "markdown", "latex", "csv"),
                   help="output format (default: from --save's suffix, else text; the paper "
                        "layouts' LaTeX is booktabs with the best figure in bold)")
    p.add_argument("--plcc", choices=("raw", "logistic"), default="raw",
                   help="which PLCC the paper layouts' PLCC columns hold; figures of another or "
                        "unstated convention are marked")
    p.add_argument("--save", type=Path, metavar="FILE",
                   help="also write the table to FILE (.csv, .md, .tex, .txt set the format)")
    p.add_argument("--published", action=argparse.BooleanOptionalAction, default=True,
                   help="add the published figures of the installed plugins for the same tasks")
    p.set_defaults(func=cmd_leaderboard)
