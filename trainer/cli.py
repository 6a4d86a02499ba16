"""`qbench train --config FILE`: the GRPO recipe from the command line. The config is checked
(and, with --check, the data too) before torch, TRL or the model load."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from qbench.core.options import key_values
    from qbench.trainer.config import load_config

    config = load_config(args.config, overrides=key_values(args.set, "--set"))
    if args.check:
        from qbench.trainer.data import prepare_data
        data = prepare_data(config, console)
        if data.problems:   # the same checks as `qbench data check`: counts, dropped, repeated
            console.print(f"config ok; the training data has {len(data.problems)} problem(s) "
                          f"(above): {len(data.samples)} samples ({data.mix()})", soft_wrap=True)
            return 1
        console.print(f"config and data ok: {len(data.samples)} samples ({data.mix()})")
        return 0
    from qbench.trainer.train import train
    try:
        result = train(config, console=console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: run the same command again to resume from the last "
                      f"checkpoint in {config.output_dir}[/]")
        return 130
    console.print(f"trained {result.global_step} steps; final model: {result.final_model}",
                  soft_wrap=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="GRPO training (the Q-Insight recipe)")
    p.add_argument("--config", type=Path, required=True, help="training YAML "
                   "(trainer/configs/qinsight.yaml, comparison.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable), e.g. lora.enabled=true, "
                        "grpo.gradient_accumulation_steps=16, resume=never")
    p.add_argument("--check", action="store_true",
                   help="check the config and decode every training image; load no model")
    p.set_defaults(func=cmd_train)
