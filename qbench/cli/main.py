"""The `qbench` command: thin verbs over library calls. Every user error is one line."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from qbench.data.fetch import Hub, fetch_missing
from qbench.data.images import ImageError
from qbench.core.options import add_options, from_args, names, require_existing
from qbench.core.model import ModelError
from qbench.core.registry import MODEL_FAMILIES, MODELS, TASKS, RegistryError, include, load_plugins, model_class
from qbench.results.leaderboard import format_table, read_leaderboard, rebuild_leaderboard, summary_columns, with_published
from qbench.run.runner import RunConfig, RunResult, expand_tasks, merge, run
from qbench.core.settings import user_settings, weights_path
from qbench.core.task import DataError

USER_ERRORS = (DataError, ModelError, RegistryError, ImageError, ValueError, FileNotFoundError)
INCLUDE_HELP = ("Python or task YAML file, or a folder of them, defining extra tasks and models "
                "(repeatable; before or after the verb)")
# Modules that add their own verbs: each defines add_parser(subparsers), whose parser sets
# `func(args, console) -> exit code`. Heavy imports stay inside those functions.
VERB_MODULES: tuple[str, ...] = ("qbench.data.check", "qbench.trainer.cli", "qbench.results.compare",
                                 "qbench.results.report", "qbench.run.score", "qbench.data.fetch")












def cmd_run(args: argparse.Namespace, console: Console) -> int:
    config = from_args(RunConfig, args)
    fetching = not config.no_fetch and not Hub.current().offline
    # a data root the run's fetch fills may not exist yet; everything else typed must
    require_existing(args, may_be_created=("--data-root",) if fetching else ())
    settings = user_settings()   # flags beat the environment and the config file
    factory = model_class(config.model)
    config.model_path = weights_path(config.model, getattr(factory, "weights_folder", None),
                                     config.model_path)
    config.data_root = config.data_root or settings.data_root
    config.data_paths = settings.data | config.data_paths
    manual = {} if config.no_fetch else fetch_missing(config, console)
    try:
        result = run(config, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished samples are saved; run the same command "
                      "again to resume[/]")
        return 130
    if not result.main:   # a launcher's other ranks: rank 0 reports (and exits) for all
        return 0
    for outcome in result.outcomes:
        if outcome.skipped:
            how = f"; {manual[outcome.task]}" if outcome.task in manual else ""
            console.print(f"[yellow]skipped[/] {outcome.task}: {escape(outcome.skipped + how)}",
                          soft_wrap=True)
    if not result.ran:
        console.print("[red]qbench: error: no task could run[/]")
        return 1
    code = summarise(result, console, "run folder")
    if result.launched and code:
        console.print(f"qbench: the launcher reports rank 0's exit status {code} as a failed "
                      "process and exits 1 itself; the run folder is complete, and the status "
                      "above is the run's", highlight=False)
    return code


def summarise(result: RunResult, console: Console, label: str) -> int:
    """The table of what was measured, then everything that changes how to read it: failures,
    notes, differences from the published split, failed tasks. Returns the exit status."""
    frame = read_leaderboard(result.leaderboard)
    frame = frame[(frame["run_id"] == result.run_dir.name)
                  & frame["task"].isin([o.task for o in result.ran])]
    if len(frame):
        print(format_table(frame))
    for note in result.notes:
        console.print(f"[yellow]{escape(note)}[/]", soft_wrap=True)
    for outcome in result.ran:
        metrics = outcome.metrics
        failures = metrics.get("failure_counts") or {}
        if failures:
            listed = ", ".join(f"{n} {status}" for status, n in failures.items())
            console.print(f"[yellow]{outcome.task}: {listed} (ids in "
                          f"{result.run_dir / 'metrics.json'})[/]", soft_wrap=True)
        for note in metrics.get("notes") or []:
            console.print(f"{outcome.task}: note: {escape(note)}", soft_wrap=True, highlight=False)
        for problem in metrics.get("problems") or []:
            console.print(f"[red]{outcome.task}: differs from the expected split:[/] "
                          f"{escape(problem)}", soft_wrap=True, highlight=False)
        if metrics.get("subset"):
            console.print(f"[red]{outcome.task}: measured on a part of the split:[/] "
                          f"{escape(metrics['subset'])}", soft_wrap=True, highlight=False)
        if outcome.failed:
            console.print(f"[red]{outcome.task}: FAILED:[/] {escape(metrics['failure_reason'])}",
                          soft_wrap=True, highlight=False)
    console.print(f"{label}: {result.run_dir}\nleaderboard: {result.leaderboard}")
    code = result.exit_code
    if code == 1:
        console.print("[red]qbench: a task failed (see above): exit status 1; its numbers are in "
                      "metrics.json but not on the leaderboard[/]")
    elif code == 3:
        console.print("[red]qbench: the measured samples are not the expected split (other "
                      "samples, or a part of it; see above): exit status 3[/]")
    return code


LIST_WIDTH = 100   # `qbench list` fits a terminal of this many columns


def _paragraph(text: str) -> str:
    """`text` in lines of LIST_WIDTH, the later ones indented; a path is never broken."""
    import textwrap
    return textwrap.fill(text, LIST_WIDTH, subsequent_indent="    ", break_long_words=False,
                         break_on_hyphens=False)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    """Tasks with the state of their data, where each default split comes from, and models with
    the state of their weights, in LIST_WIDTH columns (details: `qbench data check`)."""
    from tabulate import tabulate

    from qbench.data.sources import load_catalog
    require_existing(args)
    load_plugins()
    settings = user_settings()
    data_root = args.data_root or settings.data_root
    print(f"data root: {data_root}\n(qbench data check: files and counts; qbench fetch: "
          "downloads)\n")
    tasks, splits = [], []
    for name in sorted(TASKS):
        task = TASKS[name]()
        try:
            status = f"ready: {task.locate(data_root, settings.data.get(name))}"
        except DataError as exc:
            status = f"not found: {str(exc).removeprefix(name + ': ')}"
        tasks.append(_paragraph(f"{name} ({task.kind}, default split {task.default_split}): "
                                f"{status}"))
        where = task.split_help(task.default_split)
        splits.append(_paragraph(f"{name}: {', '.join(task.splits)}"
                                 f"{': ' + where if where else ''}"))
    print("tasks:\n" + "\n".join(tasks) + "\n")
    print("splits (where several sources are named, the first one found defines the split):")
    print("\n".join(splits) + "\n")
    rows = []
    fetchable = set(load_catalog().models)
    for name, factory in sorted(MODELS.items()) + sorted(MODEL_FAMILIES.items()):
        label = name if name in MODELS else f"{name}:<name>"
        kinds = ",".join(KIND_LABELS[k] for k in sorted(getattr(factory, "kinds", ())))
        doc = (factory.__doc__ or "").strip().splitlines()
        rows.append([label, kinds, _weights_status(name, factory, fetchable),
                     doc[0] if doc else ""])
    used = max(len(r[0]) for r in rows) + max(len(r[1]) for r in rows) + 6
    weights = min(max(len(r[2]) for r in rows), 24)
    for row in rows:
        row[2] = _fit(row[2], weights)
        row[3] = _fit(row[3], LIST_WIDTH - used - weights - 2)
    print(tabulate(rows, headers=["model", "answers", "weights", "description"]))
    return 0


KIND_LABELS = {"score": "score", "degradation": "degr", "comparison": "comp"}


def _weights_status(name: str, factory: type, fetchable: set[str]) -> str:
    needs = getattr(factory, "weights", None)
    if not needs:
        return "none needed"
    if name in MODEL_FAMILIES:   # the member names the weights: the family says who gets them
        return needs
    path = weights_path(name, getattr(factory, "weights_folder", None))
    if path is None:
        return "qbench fetch" if name in fetchable else "pass --model-path"
    return "ready" if path.exists() else "not found"


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    path, notes = rebuild_leaderboard(args.output)
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]", soft_wrap=True)
    frame = read_leaderboard(path)
    tasks = expand_tasks(args.tasks) if args.tasks else None
    if args.layout != "rows":
        return print_paper_table(args, frame, tasks, console)
    if tasks:
        frame = frame[frame["task"].isin(tasks)]
    if args.published:
        from qbench.baselines.published import PROTOCOL_COLUMNS, leaderboard_rows, load_published
        frame = with_published(frame, leaderboard_rows(load_published(), tasks or set(frame["task"])))
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
    from qbench.baselines.published import load_published
    from qbench.results.tables import TABLE1_DATASETS, paper_table, render
    published = load_published() if args.published else []
    options: dict = {}
    if args.layout == "paper":
        options = {"datasets": tasks or list(TABLE1_DATASETS), "plcc": args.plcc}
    elif args.layout == "degradation":
        options = {"task": (tasks or ["dq495k"])[0]}
    else:
        options = {"plcc": args.plcc} | ({"tasks": tasks} if tasks else {})
    table = paper_table("score" if args.layout == "paper" else args.layout, frame, published,
                        **options)
    if not table.rows:
        console.print(f"no measured or published figures for this table in {args.output}")
        return 1
    return show(render(table, table_format(args)), args.save, console)


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    return summarise(merge(args.runs, args.output, replace=args.replace), console,
                     "merged run folder")


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("qbench")
    except metadata.PackageNotFoundError:   # run from a source tree that is not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qbench", description="Image-quality benchmark harness.")
    parser.add_argument("--version", action="version", version=f"qbench {_version()}")
    # before the verb (`qbench --include f.py list`) and after it (`qbench run --include f.py`)
    parser.add_argument("--include", dest="include_first", action="append", default=[],
                        metavar="PATH", help=INCLUDE_HELP)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="run a model over tasks (default: the offline demo)")
    add_options(p, RunConfig)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="tasks (with data status) and models")
    p.add_argument("--data-root", type=Path)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("leaderboard", help="print and export the leaderboard")
    p.add_argument("--output", type=Path, default=Path("results"), metavar="DIR",
                   help="the folder of run folders, as `qbench run --output` (default results/)")
    p.add_argument("--tasks", type=names, help="comma-separated tasks (paper layout: its "
                   "columns, default the seven of Q-Insight Table 1)")
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
                   help="add the published figures (baselines/published.csv) for the same tasks")
    p.set_defaults(func=cmd_leaderboard)
    p = sub.add_parser("merge", help="combine the shards of a run (--shard i/n) into one run")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--output", type=Path, default=Path("results"))
    p.add_argument("--replace", action="store_true",
                   help="overwrite a run folder of the same name that these shards did not make")
    p.set_defaults(func=cmd_merge)

    for module in VERB_MODULES:
        importlib.import_module(module).add_parser(sub)
    for verb in set(sub.choices.values()):
        if not any(a.dest == "include" for a in verb._actions):
            verb.add_argument("--include", action="append", default=[], metavar="PATH",
                              help=INCLUDE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `qbench run`'s sibling: plain `qbench` shows help
        parser.print_help()
        return 0
    console = Console(stderr=True, soft_wrap=True)  # piped output: whole lines, never broken mid-phrase
    try:
        for path in args.include_first + getattr(args, "include", []):
            include(path)
        return args.func(args, console)
    except USER_ERRORS as exc:
        console.print(f"[red]qbench: error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except BrokenPipeError:  # `qbench list | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:   # a read-only or full disk, a permission: name the path
        where = exc.filename or "a file"
        console.print(f"[red]qbench: error:[/] cannot use {escape(str(where))}: "
                      f"{escape(exc.strerror or str(exc))}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
