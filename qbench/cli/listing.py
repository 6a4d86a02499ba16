"""`qbench list`: tasks with the state of their data and where each split comes from, models
with the state of their weights."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from qbench.core.options import require_existing
from qbench.core.registry import MODEL_FAMILIES, MODELS, TASKS, load_plugins
from qbench.core.settings import user_settings
from qbench.core.task import DataError
from qbench.data.fetch import weights_path
from qbench.data.sources import load_catalog

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="tasks (with data status) and models")
    p.add_argument("--data-root", type=Path)
    p.set_defaults(func=cmd_list)
