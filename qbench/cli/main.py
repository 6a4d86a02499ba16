"""The `qbench` command: the parser of every verb and the one place errors become exit
statuses. Every user error is one line; each verb lives in its own module of this package."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib import metadata

from rich.console import Console
from rich.markup import escape

from qbench.core.model import ModelError
from qbench.core.registry import RegistryError, include
from qbench.core.task import DataError
from qbench.data.images import ImageError

USER_ERRORS = (DataError, ModelError, RegistryError, ImageError, ValueError, FileNotFoundError)
INCLUDE_HELP = ("Python or task YAML file, or a folder of them, defining extra tasks and models "
                "(repeatable; before or after the verb)")
# The verbs, a module each: add_parser(subparsers) sets `func(args, console) -> exit code` on
# its parser. Plugins add theirs through the entry-point group VERBS_GROUP.
VERB_MODULES: tuple[str, ...] = tuple(f"qbench.cli.{verb}" for verb in (
    "run", "listing", "leaderboard", "merge", "data", "compare", "report", "score", "fetch"))
VERBS_GROUP = "qbench.verbs"


def _version() -> str:
    try:
        return metadata.version("qbench")
    except metadata.PackageNotFoundError:   # run from a source tree that is not installed
        return "(not installed)"


def build_parser(broken: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every verb; `broken` collects the plugin verbs that failed to load."""
    broken = [] if broken is None else broken
    parser = argparse.ArgumentParser(prog="qbench", description="Image-quality benchmark harness.")
    parser.add_argument("--version", action="version", version=f"qbench {_version()}")
    # before the verb (`qbench --include f.py list`) and after it (`qbench run --include f.py`)
    parser.add_argument("--include", dest="include_first", action="append", default=[],
                        metavar="PATH", help=INCLUDE_HELP)
    sub = parser.add_subparsers(dest="command")

    for module in VERB_MODULES:
        importlib.import_module(module).add_parser(sub)
    for entry in metadata.entry_points(group=VERBS_GROUP):   # plugins' verbs (qbench train)
        try:
            entry.load().add_parser(sub)
        except Exception as exc:   # a broken plugin costs its verb, not the command
            broken.append(f"verb plugin {entry.name!r} ({entry.value}) failed to load: "
                          f"{type(exc).__name__}: {exc}")
    for verb in set(sub.choices.values()):
        if not any(a.dest == "include" for a in verb._actions):
            verb.add_argument("--include", action="append", default=[], metavar="PATH",
                              help=INCLUDE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    broken: list[str] = []
    parser = build_parser(broken)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `qbench run`'s sibling: plain `qbench` shows help
        parser.print_help()
        return 0
    # piped output: whole lines, never broken mid-phrase
    console = Console(stderr=True, soft_wrap=True)
    for problem in broken:
        console.print(f"[yellow]qbench: {escape(problem)}[/]", highlight=False)
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
