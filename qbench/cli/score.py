"""`qbench score PATH ...`: scores of image files and folders, no ground truth."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from qbench.core.options import add_options, from_args, require_existing
from qbench.data.fetch import model_weights
from qbench.run.score import ScoreConfig, ScoreResult, score_images


def summary_lines(result: ScoreResult) -> list[str]:
    """What the command prints when it ends (rich markup)."""
    failed = result.images - result.scored
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.statuses.items())
                       if status != "ok")
    resumed = f"; {result.resumed} from an earlier command" if result.resumed else ""
    lines = [f"scored {result.scored} of {result.images} images, {failed} failed"
             f"{f' ({counts})' if counts else ''}{resumed}: {escape(str(result.output))}"]
    scale = (f", on a {result.score_range[0]:g}-{result.score_range[1]:g} scale"
             if result.score_range else "")
    lines.append(f"{escape(result.model)} scores: {'lower' if result.lower_better else 'higher'} "
                 f"is better{scale}")
    lines += [f"[yellow]{status}: first: {escape(error)}[/]"
              for status, error in result.first_errors.items()]
    lines += [f"[yellow]{escape(note)}[/]" for note in result.notes]
    if result.failure:
        lines.append(f"[red]qbench: FAILED: {escape(result.failure)}: exit status 1[/]")
    elif result.lost:
        lines.append(f"[red]qbench: {result.lost} of {result.images} images got no answer from "
                     "the model (see above): exit status 3[/]")
    return lines


def cmd_score(args: argparse.Namespace, console: Console) -> int:
    require_existing(args)
    config = from_args(ScoreConfig, args, paths=[Path(p) for p in args.paths])
    config.model_path = model_weights(config.model, config.model_path)
    try:
        result = score_images(config, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: scored images are kept; run the same command again "
                      "to resume[/]")
        return 130
    if result.main:   # a launcher's other ranks: rank 0 reports for all
        for line in summary_lines(result):
            console.print(line, soft_wrap=True, highlight=False)
    return result.exit_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score", help="score image files, folders or list files (no ground truth)",
        description="One row per image (score, status, error, the model's text) to CSV, Parquet "
                    "or JSONL; run the same command again to resume.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="an image, a folder (searched recursively) or a list file (.txt, .lst, "
                        ".list: one image path per line, relative to the list file)")
    add_options(p, ScoreConfig)
    p.set_defaults(func=cmd_score)
