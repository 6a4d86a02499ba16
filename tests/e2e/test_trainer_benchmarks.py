"""The trainer's benchmark scripts run: the short version of grpo_learns.py (the demonstration's
two GRPO runs and three evaluations through the CLI) and the CPU dry run of grpo_7b_step.py
(the GPU script's code on the tiny model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=False,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})


def test_grpo_learns_quick_version_runs_both_arms_through_the_cli(tmp_path):
    """The short version end to end: a warm start, `qbench train` with true and with shuffled
    labels, `qbench run` before and after. Its figures on 12 images are noise and are not
    checked; what is checked is that the control differs from the true-label run only in the
    labels its rewards read, and that every figure the JSON promises is there."""
    outcome_file, work = tmp_path / "outcome.json", tmp_path / "work"
    done = run_script(str(BENCHMARKS / "grpo_learns.py"), "--quick", "--keep", str(work),
                      "--json", str(outcome_file))
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(outcome_file.read_text())
    for key in ("srcc_before", "srcc_after", "control_srcc_before", "control_srcc_after"):
        assert outcome[key] is None or -1 <= outcome[key] <= 1
    assert outcome["n_test"] == 12 and outcome["seconds"]["total"] > 0
    assert outcome["control_srcc_before"] == outcome["srcc_before"]   # one shared start
    steps = outcome["plan"]["grpo_steps"]
    for curve in outcome["reward_curves"].values():
        assert [s["step"] for s in curve] == list(range(1, steps + 1))
        assert all(0 <= s["format"] <= 1 and 0 <= s["score"] <= 1 for s in curve)
    for evaluation in outcome["evaluations"].values():
        assert evaluation["n"] == 12

    # the two configurations differ in the split the rewards read and the output folder only
    true, control = outcome["configs"]["true"], outcome["configs"]["control"]
    assert true["data"]["score"][0].pop("split") == "train"
    assert control["data"]["score"][0].pop("split") == "train-shuffled"
    assert true.pop("output_dir") != control.pop("output_dir")
    assert true == control
    # and the shuffled split is the training split with its levels permuted across the images
    folder = work / "brightness"
    train = json.loads((folder / "train.json").read_text())
    shuffled = json.loads((folder / "train-shuffled.json").read_text())
    assert [r["image"] for r in train] == [r["image"] for r in shuffled]
    assert sorted(r["level"] for r in train) == sorted(r["level"] for r in shuffled)
    assert [r["level"] for r in train] != [r["level"] for r in shuffled]
    assert "true labels: SRCC" in done.stdout and "shuffled labels (control)" in done.stdout


def test_grpo_7b_step_dry_run():
    done = run_script(str(BENCHMARKS / "grpo_7b_step.py"), "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("seconds per step: median ") for line in lines), done.stdout
    assert "peak GPU memory: n/a (CPU dry run)" in lines
