"""`qbench merge`: the shards of one run into the folder the unsharded run would have made."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from qbench.cli.run import summarise
from qbench.run.runner import merge


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    return summarise(merge(args.runs, args.output, replace=args.replace), console,
                     "merged run folder")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge",
                              help="combine the shards of a run (--shard i/n) into one run")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--output", type=Path, default=Path("results"))
    p.add_argument("--replace", action="store_true",
                   help="overwrite a run folder of the same name that these shards did not make")
    p.set_defaults(func=cmd_merge)
