"""Data-parallel runs on a launcher: `torchrun --nproc_per_node 2 -m qbench run` on the CPU
(gloo) gives one run folder whose metrics are those of a single process, and a rank that dies
leaves predictions the same command resumes from."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import RT_PLUGIN, TOY_PLUGIN

pytestmark = pytest.mark.slow   # launcher subprocesses
TASKS = "rt-score,rt-degradation,rt-comparison"


def qbench(root: Path, output: str, *extra: str, ranks: int = 1) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                 "--master_port", str(29500 + os.getpid() % 1000)] if ranks > 1 else [sys.executable])
    cmd = [*launcher, "-m", "qbench", "--include", str(RT_PLUGIN), "run", "--model", "rt-model",
           "--tasks", TASKS, "--output", str(root / output), "--batch-size", "3", "--ci", "200",
           "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "1", "RT_ROOT": str(root)})


def metrics_of(root: Path, output: str) -> dict:
    (folder,) = (root / output).glob("rt-model-*")
    metrics = json.loads((folder / "metrics.json").read_text())
    # times differ between runs, and so do the digests of records that hold latencies
    varying = ("wall_s", "records_sha256", "digest")
    return {task: {k: v for k, v in m.items() if k not in varying} for task, m in metrics.items()}


def test_two_ranks_make_one_run_folder_with_the_single_process_metrics(tmp_path):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 31, "seed": 3, "lower_better": True}))
    single = qbench(tmp_path, "single")
    assert single.returncode == 0, single.stderr
    double = qbench(tmp_path, "double", ranks=2)
    assert double.returncode == 0, double.stderr
    assert metrics_of(tmp_path, "double") == metrics_of(tmp_path, "single")   # intervals included
    (folder,) = (tmp_path / "double").glob("rt-model-*")
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 31 and len({(r["task"], r["sample_id"]) for r in rows}) == 3 * 31
    assert not list(folder.glob("predictions.rank*"))
    assert double.stdout.count("rt-score") == 1   # rank 0 alone reports
    assert "--shard under a launcher" in qbench(tmp_path, "x", "--shard", "0/2", ranks=2).stderr


def test_a_rank_that_dies_leaves_predictions_the_rerun_resumes(tmp_path):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 40, "seed": 4, "lower_better": False}))
    calls = tmp_path / "calls"
    dying = qbench(tmp_path, "out", "--run-name", "r", "--model-arg", f"log={calls}",
                   "--model-arg", "die_rank=1", "--model-arg", "die_after=3", ranks=2)
    assert dying.returncode != 0
    folder = tmp_path / "out" / "r"
    left = [json.loads(line) for path in folder.glob("predictions*.jsonl")
            for line in path.read_text().splitlines()]
    assert left and len(left) < 120
    asked_before = calls.read_text().split()
    rerun = qbench(tmp_path, "out", "--run-name", "r", "--model-arg", f"log={calls}",
                   "--model-arg", "die_rank=1", "--model-arg", "die_after=3", ranks=2)
    assert rerun.returncode == 0, rerun.stderr
    asked_after = calls.read_text().split()[len(asked_before):]
    assert not {r["sample_id"] for r in left} & set(asked_after)   # finished work kept
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len({(r["task"], r["sample_id"]) for r in rows}) == 120 == len(rows)
    assert not list(folder.glob("predictions.rank*"))
    clean = qbench(tmp_path, "clean", "--run-name", "r", "--model-arg", f"log={calls}",
                   "--model-arg", "die_rank=1", "--model-arg", "die_after=3")
    assert clean.returncode == 0
    assert json.loads((folder / "metrics.json").read_text())["rt-score"]["srcc"] == \
        json.loads((tmp_path / "clean" / "r" / "metrics.json").read_text())["rt-score"]["srcc"]


def test_each_launcher_rank_gets_its_own_vllm_gpus():
    """vLLM data parallel under a launcher: rank r's engine sees GPUs r*tp .. r*tp+tp-1."""
    import pytest

    from qbench.backends.vlm import rank_gpus
    from qbench.core.model import ModelError
    assert rank_gpus(0, 2, "0,1,2,3") == "0,1" and rank_gpus(1, 2, "0,1,2,3") == "2,3"
    assert rank_gpus(2, 1, "4,5,6") == "6"
    with pytest.raises(ModelError, match=r"launcher rank 1 needs GPUs 2..3 for "
                                         r"tensor_parallel_size 2; 3 visible"):
        rank_gpus(1, 2, "0,1,2")


def test_qbench_score_under_a_launcher_writes_one_output(tmp_path):
    """`qbench score` on two ranks: each image scored once, one output, as one process."""
    import numpy as np
    import pandas as pd
    from PIL import Image
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(13):
        Image.fromarray(np.full((24, 24, 3), i * 19, np.uint8)).save(folder / f"{i:02d}.png")
    outputs = {}
    for ranks, name in ((1, "single.csv"), (2, "double.csv")):
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                     "--master_port", str(29600 + os.getpid() % 1000)] if ranks > 1 else [sys.executable])
        done = subprocess.run([*launcher, "-m", "qbench", "--include", str(TOY_PLUGIN), "score", str(folder),
                               "--model", "toy-luma", "--output", str(tmp_path / name),
                               "--batch-size", "2", "--no-progress"],
                              capture_output=True, text=True, timeout=300,
                              env=os.environ | {"OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        outputs[ranks] = pd.read_csv(tmp_path / name)
    assert outputs[2]["image"].tolist() == outputs[1]["image"].tolist()
    assert outputs[2]["score"].tolist() == outputs[1]["score"].tolist()
    assert not list((tmp_path / "double.csv.qbench").glob("predictions.rank*"))
