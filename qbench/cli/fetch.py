"""`qbench fetch`: download, verify and lay out benchmark data and weights."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from qbench.core.options import add_options, from_args, names
from qbench.core.registry import task_names
from qbench.core.settings import user_settings
from qbench.data.fetch import FetchError, Hub, fetch_all, plan_model, plan_task, show, task_folder
from qbench.data.sources import load_catalog
from qbench.run.runner import RunConfig


def cmd_fetch(args: argparse.Namespace, console: Console) -> int:
    settings = user_settings()
    config = from_args(RunConfig, args)
    catalog = load_catalog(args.sources)
    data_root = config.data_root or settings.data_root
    overrides = settings.data | config.data_paths
    tasks = task_names(args.tasks) if args.tasks else []
    models = [m for text in args.model for m in names(text)]
    if not tasks and not models:
        raise ValueError("nothing to fetch: pass --tasks T1,T2 (or all) and/or --model NAME")
    unknown = [m for m in models if m not in catalog.models]
    if unknown:
        raise FetchError(f"no source for model {unknown[0]} in the catalog or sources files; "
                         f"known: {', '.join(sorted(catalog.models))}")
    hub = Hub.current()
    commits: dict[tuple, str] = {}
    plans = []
    for name in tasks:
        if name in catalog.tasks:
            folder = task_folder(name, catalog.tasks[name], data_root, overrides.get(name))
            plans.append(plan_task(hub, name, catalog.tasks[name], folder, commits))
            plans[-1].check_folder()
    weights = [plan_model(hub, m, catalog.models[m], commits) for m in models]
    show(console, hub, plans, weights)
    not_fetched = [n for n in tasks if n not in catalog.tasks]
    for name in not_fetched:
        why = catalog.manual.get(name, "no source in the catalog or sources files")
        console.print(f"[yellow]{name}: not fetched:[/] {escape(why)}", soft_wrap=True)
    if args.dry_run:
        return 0
    fetch_all(console, hub, plans, weights)
    # a task named on purpose that cannot be fetched is a failure; `all` takes what it can
    return 1 if not_fetched and "all" not in (args.tasks or []) else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fetch", help="download, verify and lay out benchmark data and weights (Hugging Face "
                      "Hub; HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN)")
    p.add_argument("--tasks", type=names, help="comma-separated task names, or 'all'")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="weights of a catalog model (repeatable, or comma-separated)")
    add_options(p, RunConfig, only=("data_root", "data_paths"))
    p.add_argument("--sources", type=Path, metavar="FILE",
                   help="sources file whose entries replace the catalog's of the same name")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be fetched, with sizes, and stop")
    p.set_defaults(func=cmd_fetch)
