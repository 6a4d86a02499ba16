"""The `qbench` command: thin verbs over library calls. Every user error is one line."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .images import DEFAULT_MAX_PIXELS, ImageError
from .model import ModelError
from .registry import (MODEL_FAMILIES, MODELS, TASKS, RegistryError, include, load_plugins,
                       model_class)
from .results import (format_table, read_leaderboard, rebuild_leaderboard, summary_columns,
                      with_published)
from .runner import DEFAULT_MAX_FAILURE_RATE, RunConfig, RunResult, expand_tasks, merge, run
from .settings import user_settings, weights_path
from .task import DataError

USER_ERRORS = (DataError, ModelError, RegistryError, ImageError, ValueError, FileNotFoundError)
# Modules that add their own verbs: each defines add_parser(subparsers), whose parser sets
# `func(args, console) -> exit code`. Heavy imports stay inside those functions.
VERB_MODULES: tuple[str, ...] = ("qbench.datacheck", "qbench.trainer.cli", "qbench.compare",
                                 "qbench.report")


def _key_values(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _option_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def task_options(pairs: list[str]) -> dict[str, dict[str, object]]:
    """`--task-arg TASK.KEY=VALUE` pairs by task."""
    out: dict[str, dict[str, object]] = {}
    for key, value in _key_values(pairs, "--task-arg").items():
        task, dot, name = key.partition(".")
        if not dot or not task or not name:
            raise ValueError(f"--task-arg expects TASK.KEY=VALUE, got {key}={value}")
        out.setdefault(task, {})[name] = _option_value(value)
    return out


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects i/n, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return index, count


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    settings = user_settings()
    factory = model_class(args.model)
    config = RunConfig(
        model=args.model, tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        model_path=weights_path(args.model, getattr(factory, "weights_folder", None), args.model_path),
        data_root=args.data_root or settings.data_root,
        data_paths=settings.data | {k: Path(v) for k, v in _key_values(args.data, "--data").items()},
        model_options={k: _option_value(v) for k, v in _key_values(args.model_arg, "--model-arg").items()},
        split=args.split, batch_size=args.batch_size, limit=args.limit, seed=args.seed,
        shard=args.shard, output_dir=args.output, run_name=args.run_name, device=args.device,
        workers=args.workers, progress=not args.no_progress, ci_resamples=args.ci,
        task_options=task_options(args.task_arg), max_pixels=args.max_pixels,
        max_failure_rate=args.max_failure_rate, wait=args.wait)
    try:
        result = run(config, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished samples are saved; run the same command "
                      "again to resume[/]")
        return 130
    for outcome in result.outcomes:
        if outcome.skipped:
            console.print(f"[yellow]skipped[/] {outcome.task}: {escape(outcome.skipped)}",
                          soft_wrap=True)
    if not result.ran:
        console.print("[red]qbench: error: no task could run[/]")
        return 1
    return summarise(result, console, "run folder")


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
            console.print(f"[red]{outcome.task}: differs from the published split:[/] "
                          f"{escape(problem)}", soft_wrap=True, highlight=False)
        if outcome.failed:
            console.print(f"[red]{outcome.task}: FAILED:[/] {escape(metrics['failure_reason'])}",
                          soft_wrap=True, highlight=False)
    console.print(f"{label}: {result.run_dir}\nleaderboard: {result.leaderboard}")
    code = result.exit_code
    if code == 1:
        console.print("[red]qbench: a task failed (see above): exit status 1; its numbers are in "
                      "metrics.json but not on the leaderboard[/]")
    elif code == 3:
        console.print("[red]qbench: the measured samples differ from the published protocol "
                      "(see above): exit status 3[/]")
    return code


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from tabulate import tabulate
    load_plugins()
    settings = user_settings()
    data_root = args.data_root or settings.data_root
    rows, splits = [], []
    for name in sorted(TASKS):
        task = TASKS[name]()
        try:
            status = f"ready: {task.locate(data_root, settings.data.get(name))}"
        except DataError as exc:
            status = f"not found: {str(exc).removeprefix(name + ': ')}"
        rows.append([name, task.kind, task.default_split, status])
        splits.append([name, ", ".join(task.splits), task.split_help(task.default_split)])
    print(tabulate(rows, headers=["task", "kind", "split", "data"]))
    print()
    print(tabulate(splits, headers=["task", "splits", "default split from (first found wins)"]))
    print()
    rows = []
    for name, factory in sorted(MODELS.items()) + sorted(MODEL_FAMILIES.items()):
        label = name if name in MODELS else f"{name}:<name>"
        kinds = ",".join(sorted(getattr(factory, "kinds", ())))
        doc = (factory.__doc__ or "").strip().splitlines()
        rows.append([label, kinds, _weights_status(name, factory), doc[0] if doc else ""])
    print(tabulate(rows, headers=["model", "answers", "weights", "description"]))
    return 0


def _weights_status(name: str, factory: object) -> str:
    needs = getattr(factory, "weights", None)
    if not needs:
        return "none needed"
    path = weights_path(name, getattr(factory, "weights_folder", None))
    if path is None:
        return f"pass --model-path ({needs})"
    return f"{'ready' if path.exists() else 'not found'}: {path}"


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    path, notes = rebuild_leaderboard(args.output)
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]", soft_wrap=True)
    frame = read_leaderboard(path)
    tasks = expand_tasks(args.tasks.split(",")) if args.tasks else None
    if tasks:
        frame = frame[frame["task"].isin(tasks)]
    if args.published:
        from qbench.baselines.published import PROTOCOL_COLUMNS, leaderboard_rows, load_published
        frame = with_published(frame, leaderboard_rows(load_published(), tasks or set(frame["task"])))
    if frame.empty:
        console.print(f"no results in {args.output / 'leaderboard.csv'}: run `qbench run` first")
        return 1
    columns = summary_columns(frame)
    if args.published and (frame["source"] == "published").any():
        columns = ["source", *columns, *[c for c in PROTOCOL_COLUMNS if c in frame]]
    print(format_table(frame, columns=columns))
    if args.csv:
        frame.to_csv(args.csv, index=False)
        console.print(f"wrote {args.csv}")
    if args.markdown:
        Path(args.markdown).write_text(format_table(frame, "github", columns) + "\n")
        console.print(f"wrote {args.markdown}")
    return 0


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    return summarise(merge(args.runs, args.output), console, "merged run folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qbench", description="Image-quality benchmark harness.")
    parser.add_argument("--include", action="append", type=Path, default=[], metavar="PATH",
                        help="Python file or folder defining extra tasks/models (repeatable)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="run a model over tasks (default: the offline demo)")
    p.add_argument("--model", default="stats")
    p.add_argument("--tasks", default="demo-degradation,demo-score",
                   help="comma-separated task names, or 'all'")
    p.add_argument("--model-path", type=Path)
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model option (repeatable), e.g. backend=vllm")
    p.add_argument("--data-root", type=Path, help="folder holding one sub-folder per task "
                   "(default: $QBENCH_DATA_ROOT or the config file)")
    p.add_argument("--data", action="append", default=[], metavar="TASK=PATH",
                   help="folder of one task, overriding --data-root (repeatable)")
    p.add_argument("--split")
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--limit", type=_positive)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", type=_shard, metavar="i/n")
    p.add_argument("--output", type=Path, default=Path("results"))
    p.add_argument("--run-name", help="name of the run folder (default: derived from settings)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=4, help="image decoding threads")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--task-arg", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="task option (repeatable), e.g. spaq.resize_short_side=none")
    p.add_argument("--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS,
                   help="larger images are counted image errors, never decoded "
                        f"(default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--max-failure-rate", type=float, default=DEFAULT_MAX_FAILURE_RATE,
                   metavar="RATE", help="share of a task's samples that may be model errors "
                   f"before the task fails and the run exits 1 (default {DEFAULT_MAX_FAILURE_RATE})")
    p.add_argument("--wait", action="store_true",
                   help="if another command is writing the same run folder, wait for it "
                        "instead of refusing")
    p.add_argument("--ci", type=int, default=0, metavar="RESAMPLES",
                   help="add bootstrap 95%% intervals of the headline metrics (e.g. --ci 2000)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="tasks (with data status) and models")
    p.add_argument("--data-root", type=Path)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("leaderboard", help="print and export the leaderboard")
    p.add_argument("--output", type=Path, default=Path("results"))
    p.add_argument("--tasks")
    p.add_argument("--csv", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--published", action=argparse.BooleanOptionalAction, default=True,
                   help="add the published figures (baselines/published.csv) for the same tasks")
    p.set_defaults(func=cmd_leaderboard)
    p = sub.add_parser("merge", help="combine the shards of a run (--shard i/n) into one run")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--output", type=Path, default=Path("results"))
    p.set_defaults(func=cmd_merge)

    for module in VERB_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `qbench run`'s sibling: plain `qbench` shows help
        parser.print_help()
        return 0
    console = Console(stderr=True)
    try:
        for path in args.include:
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
