"""`qbench data check`: per task, its files, counts against the published ones, dropped and
repeated rows, and its images, before any model runs."""
from __future__ import annotations

import argparse

from rich.console import Console

from qbench.core.options import add_options, from_args, names, require_existing
from qbench.core.registry import get_task, task_names
from qbench.core.settings import user_settings
from qbench.data.check import check_task, format_check
from qbench.run.runner import RunConfig


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    require_existing(args)
    config = from_args(RunConfig, args)   # the same options as `run`, read the same way
    names = task_names(config.tasks)
    settings = user_settings()   # flags override the environment and the config file, as in `run`
    overrides = settings.data | config.data_paths
    data_root = config.data_root or settings.data_root
    options = config.task_options
    all_ok = True
    for name in names:
        task = get_task(name, options.get(name))
        if args.split and args.split not in task.splits:
            print(f"{name}: NOT READY: no split {args.split!r} (has: {', '.join(task.splits)})")
            all_ok = False
            continue
        check = check_task(task, data_root, overrides.get(name), args.split,
                           decode=not args.no_decode, workers=args.workers)
        print("\n".join(format_check(check)))
        all_ok &= check.ok
    return 0 if all_ok else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect benchmark data")
    verbs = data.add_subparsers(dest="data_command", required=True)
    p = verbs.add_parser("check", help="per task: files, counts, missing/unreadable/duplicate "
                         "images, train/test overlap")
    p.add_argument("--tasks", type=names, default=["all"], help="comma-separated task names, "
                   "'all' (the default), or task YAML files")
    add_options(p, RunConfig, only=("data_root", "data_paths", "split", "task_options"))
    p.add_argument("--no-decode", action="store_true",
                   help="only check that images exist and hash them; do not decode")
    p.add_argument("--workers", type=int, default=4, help="threads reading images")
    p.set_defaults(func=cmd_check)
