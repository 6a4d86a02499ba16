"""The trainer's benchmark scripts run: the short version of grpo_learns.py (does training move
the model the right way through the recipe's rewards, data path and evaluator?) and the CPU
dry run of grpo_7b_step.py (the GPU script's code on the tiny model)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=False,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})


def test_grpo_learns_quick_version_raises_the_reward(tmp_path):
    """A model warm-started on the format only, then trained by `qbench train`: the mean reward
    of its completions goes up from the first steps to the last, and `qbench run` reads its
    held-out answers before and after."""
    outcome_file = tmp_path / "outcome.json"
    done = run_script(str(BENCHMARKS / "grpo_learns.py"), "--quick", "--json", str(outcome_file))
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(outcome_file.read_text())
    steps = outcome["steps"]
    third = len(steps) // 3
    first = statistics.fmean(s["reward"] for s in steps[:third])
    last = statistics.fmean(s["reward"] for s in steps[-third:])
    assert last > first, [s["reward"] for s in steps]
    for name in ("before", "after"):
        assert outcome[name]["n"] > 0 and outcome[name]["parsed_fraction"] > 0
    assert "SRCC before -> after" in done.stdout


def test_grpo_7b_step_dry_run():
    done = run_script(str(BENCHMARKS / "grpo_7b_step.py"), "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("seconds per step: median ") for line in lines), done.stdout
    assert "peak GPU memory: n/a (CPU dry run)" in lines
