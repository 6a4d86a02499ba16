"""`qbench run`: a model over tasks, after fetching what the run lacks; the table of what was
measured, then everything that changes how to read it, and the exit status."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from qbench.core.options import add_options, from_args, require_existing
from qbench.core.settings import user_settings
from qbench.data.fetch import Hub, fetch_missing, model_weights
from qbench.results.leaderboard import format_table, read_leaderboard
from qbench.run.runner import RunConfig, RunResult, run


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    config = from_args(RunConfig, args)
    fetching = not config.no_fetch and not Hub.current().offline
    # a data root the run's fetch fills may not exist yet; everything else typed must
    require_existing(args, may_be_created=("--data-root",) if fetching else ())
    settings = user_settings()   # flags beat the environment and the config file
    config.model_path = model_weights(config.model, config.model_path)
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
        assert metrics is not None   # `ran` holds the outcomes that have metrics
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run a model over tasks (default: the offline demo)")
    add_options(p, RunConfig)
    p.set_defaults(func=cmd_run)
