"""The run folder as one contract: what `run` writes survives shards, merge, compare and report
unchanged (both ground-truth directions, every kind); merge refuses runs that differ; concurrent
writers lose nothing; damaged logs keep every good record; failures cannot pass."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from helpers import RT_PLUGIN
from qbench import DataError
from qbench.cli.main import main
from qbench.core import registry
from qbench.results.compare import compare_runs
from qbench.results.folder import REJECTED, RunView
from qbench.results.leaderboard import read_leaderboard
from qbench.results.report import build_report
from qbench.run.runner import RunConfig, merge, run

# Bootstrap resamples of these tests: enough to compare intervals exactly, few enough that the
# logistic PLCC's refits (one curve_fit per resample) stay cheap
RESAMPLES = 30


@pytest.fixture(autouse=True)
def rt_plugin():
    registry.include(RT_PLUGIN)


def rt_config(output: Path, **kw) -> RunConfig:
    defaults = dict(model="rt-model", tasks=["rt-score", "rt-degradation", "rt-comparison"],
                    output_dir=output, batch_size=7, progress=False, ci_resamples=RESAMPLES)
    return RunConfig(**(defaults | kw))


SCORED_KEYS = ("n", "n_ok", "parsed_fraction", "plcc", "plcc_logistic", "srcc", "krcc",
               "class_acc_mean", "level_acc_mean", "class_acc", "level_acc", "accuracy",
               "confusion", "ci")


def assert_same(a, b, where):
    """Equal up to float rounding, through nested dicts and lists; None only equals None."""
    if isinstance(a, dict) or isinstance(b, dict):
        assert isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) or isinstance(b, list):
        assert isinstance(a, list) and isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif a is None or b is None or isinstance(a, (str, bool)):
        assert a == b, where
    else:
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12), where


@settings(max_examples=3, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(12, 40), seed=st.integers(0, 1000), lower_truth=st.booleans(),
       lower_model=st.booleans(), shards=st.integers(2, 3))
# the logistic fit from the bootstrap's start lands 1e-9 away from the reported one here
@pytest.mark.slow
@example(n=13, seed=1, lower_truth=False, lower_model=False, shards=3)
def test_round_trip_run_shards_merge_compare_report_agree(tmp_path_factory, monkeypatch, n, seed,
                                                          lower_truth, lower_model, shards):
    root = tmp_path_factory.mktemp("rt")
    (root / "rt.json").write_text(json.dumps({"n": n, "seed": seed, "lower_better": lower_truth}))
    monkeypatch.setenv("RT_ROOT", str(root))
    options = {"lower": lower_model}
    whole = run(rt_config(root / "whole", model_options=options))
    assert whole.exit_code == 0
    parts = [run(rt_config(root / "shards", model_options=options, shard=(i, shards))).run_dir
             for i in range(shards)]
    merged = merge(parts, root / "merged")
    assert merged.run_dir.name == whole.run_dir.name   # the id the unsharded run has
    for a, b in zip(whole.ran, merged.ran):
        assert a.task == b.task
        for key in SCORED_KEYS:
            assert_same(a.metrics.get(key), b.metrics.get(key), f"{a.task} {key}")
    score = whole.ran[0].metrics
    assert score["srcc"] > 0.5   # both directions oriented: a good model correlates positively
    view_whole, view_merged = RunView.load(whole.run_dir), RunView.load(merged.run_dir)
    assert view_merged.manifest.tasks["rt-score"]["lower_better"] is lower_truth
    for c in compare_runs(view_whole, view_merged, resamples=RESAMPLES):
        assert c.difference.result.difference == pytest.approx(0, abs=1e-12)
        assert c.difference.verdict == "no significant difference"
    report = build_report([view_merged], resamples=RESAMPLES)
    row = next(r for r in report.leaderboard.rows if r[2] == "rt-score")
    srcc = report.leaderboard.columns.index("srcc")
    ci = score["ci"]["srcc"]
    assert row[srcc] == f"{score['srcc']:.4f} [{ci['low']:.3f},\u00a0{ci['high']:.3f}]"
    assert not [n for n in report.notes if "no CI" in n]


@pytest.mark.slow
def test_a_named_run_folder_refuses_a_run_with_other_settings(tmp_path, monkeypatch):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 10, "seed": 1, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    run(rt_config(tmp_path / "out", tasks=["rt-score"], run_name="mine"))
    with pytest.raises(DataError, match=r"out/mine holds a run of other settings: its model "
                                        r"settings differ; use another --run-name"):
        run(rt_config(tmp_path / "out", tasks=["rt-score"], run_name="mine",
                      model_options={"noise": 0.9}))


@pytest.mark.slow
def test_merge_refuses_runs_that_differ(tmp_path, monkeypatch):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 20, "seed": 1, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    first = run(rt_config(tmp_path / "a", tasks=["rt-score"], shard=(0, 2))).run_dir
    second = run(rt_config(tmp_path / "b", tasks=["rt-score"], shard=(1, 2), limit=5)).run_dir
    with pytest.raises(DataError, match=r"differs from .* in its limit \(5 vs None\)"):
        merge([first, second], tmp_path / "m")
    other_model = run(rt_config(tmp_path / "c", tasks=["rt-score"], shard=(1, 2),
                                model_options={"noise": 0.9})).run_dir
    with pytest.raises(DataError, match=r"in its model settings"):
        merge([first, other_model], tmp_path / "m")
    three = run(rt_config(tmp_path / "d", tasks=["rt-score"], shard=(1, 3))).run_dir
    with pytest.raises(DataError, match=r"in its shard count \(3 vs 2\)"):
        merge([first, three], tmp_path / "m")
    (tmp_path / "rt.json").write_text(json.dumps({"n": 20, "seed": 2, "lower_better": False}))
    changed = run(rt_config(tmp_path / "e", tasks=["rt-score"], shard=(1, 2))).run_dir
    with pytest.raises(DataError, match=r"read different data for task rt-score"):
        merge([first, changed], tmp_path / "m")
    with pytest.raises(DataError, match=r"shard 0 of 2 given twice"):
        merge([first, first], tmp_path / "m")


def test_damaged_log_keeps_every_good_record_and_sets_the_rest_aside(tmp_path, monkeypatch):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 30, "seed": 3, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    calls = tmp_path / "calls"   # the model records every sample it is asked about
    config = rt_config(tmp_path / "out", tasks=["rt-score"], run_name="r",
                       model_options={"log": str(calls)})
    first = run(config)
    calls.unlink()
    log = first.run_dir / "predictions.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    damaged = lines[:10] + ["\x00\x01garbage{\n", '["a valid JSON line", "that is not a record"]\n',
                            '{"task": "rt-score", "sample_id": "s999", "status": "weird"}\n'] + lines[10:]
    log.write_text("".join(damaged))
    again = run(config)   # resume: nothing recomputed, the three bad lines set aside
    assert again.ran[0].metrics["n_ok"] == 30
    assert len(log.read_text().splitlines()) == 30
    side = [json.loads(line) for line in (first.run_dir / REJECTED).read_text().splitlines()]
    assert [entry["line"] for entry in side] == [11, 12, 13]
    assert any("3 line(s) that are not prediction records moved to" in n for n in again.notes)
    assert again.ran[0].metrics["srcc"] == first.ran[0].metrics["srcc"]
    assert not calls.exists()


def test_a_model_that_raises_fails_the_run_with_its_traceback(tmp_path, monkeypatch, capsys):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 40, "seed": 4, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    code = main(["run", "--model", "rt-model", "--model-arg", "crash=true", "--tasks", "rt-score",
                 "--output", str(tmp_path / "out"), "--batch-size", "8", "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert "rt-score: FAILED: 8 model errors, more than --max-failure-rate 0.05 of 40 samples " \
           "allows (2); first: AttributeError: 'list' object has no attribute 'undefined_attribute'" in err
    (folder,) = (tmp_path / "out").glob("rt-model-*")
    trace = (folder / "errors.log").read_text()
    assert "Traceback (most recent call last)" in trace and "undefined_attribute" in trace
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["transient"] is False for r in rows)   # stopped after one batch
    assert read_leaderboard(tmp_path / "out" / "leaderboard.csv").empty      # no row for a failure
    metrics = json.loads((folder / "metrics.json").read_text())["rt-score"]
    assert metrics["status"] == "failed"


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 10, "seed": 5, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the output folder should be")
    code = main(["run", "--model", "rt-model", "--tasks", "rt-score", "--no-progress",
                 "--output", str(blocked / "results")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err
    assert f"qbench: error: cannot use {blocked / 'results'}" in err
    assert "Not a directory" in err


@pytest.mark.slow
def test_malformed_manifest_and_leaderboard_name_the_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 10, "seed": 5, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    folder = run(rt_config(tmp_path / "out", tasks=["rt-score"])).run_dir
    (folder / "manifest.json").write_text("{broken")
    assert main(["report", str(folder)]) == 2
    assert f"{folder / 'manifest.json'} is not valid JSON" in capsys.readouterr().err
    assert main(["leaderboard", "--output", str(tmp_path / "out"), "--no-published"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"leaderboard: left out {folder}" in err


def cli_run(output: Path, seed: int, root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qbench", "--include", str(RT_PLUGIN), "run", "--model", "rt-model",
           "--tasks", "rt-score", "--output", str(output), "--seed", str(seed), "--no-progress",
           "--batch-size", "2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1", "RT_ROOT": str(root)})


@pytest.mark.slow
def test_concurrent_runs_into_one_folder_keep_every_leaderboard_row(tmp_path):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 12, "seed": 6, "lower_better": False}))
    procs = [cli_run(tmp_path / "out", seed, tmp_path) for seed in range(6)]   # six run ids
    for proc in procs:
        assert proc.wait(timeout=240) == 0, proc.stderr.read()
    board = read_leaderboard(tmp_path / "out" / "leaderboard.csv")
    assert len(board) == 6 and board["run_id"].nunique() == 6
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))


@pytest.mark.slow
def test_the_same_command_twice_at_once_loses_and_duplicates_nothing(tmp_path):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 16, "seed": 7, "lower_better": False}))
    release = tmp_path / "release"
    same = ("--model-arg", f"wait_for={release}", "--run-name", "same")
    first = cli_run(tmp_path / "out", 0, tmp_path, *same)   # holds the folder until released
    lock = tmp_path / "out" / "same" / ".lock"
    for _ in range(1200):
        if lock.exists() and lock.read_text().startswith("pid"):
            break
        time.sleep(0.05)
    second = cli_run(tmp_path / "out", 0, tmp_path, *same)
    assert second.wait(timeout=240) == 2
    assert "is in use by pid" in " ".join(second.stderr.read().split())
    queued = cli_run(tmp_path / "out", 0, tmp_path, *same, "--wait")
    release.touch()
    assert first.wait(timeout=240) == 0, first.stderr.read()
    assert queued.wait(timeout=240) == 0, queued.stderr.read()
    rows = [json.loads(line) for line in (tmp_path / "out" / "same" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and len({r["sample_id"] for r in rows}) == 16


@pytest.mark.slow
def test_a_new_metric_with_an_interval_is_one_registration(tmp_path, monkeypatch):
    """Registering a metric is all it takes for run, intervals, leaderboard, compare and report
    to carry it (here: mean absolute error, lower is better, bootstrapped per sample)."""
    from qbench.scoring import metrics as scoring
    from qbench.scoring.bootstrap import looped
    from qbench.scoring.metrics import metric, per_sample

    def mean_abs(x, y):
        return float(np.mean(np.abs(x - y)))

    before = list(scoring.METRICS)
    metric("mae", kinds={"score"}, higher_better=False,
           resample=lambda s: per_sample(s, looped(mean_abs, s.pred, s.gt)))(
        lambda s: mean_abs(s.pred, s.gt) if s.scored else None)
    try:
        (tmp_path / "rt.json").write_text(json.dumps({"n": 30, "seed": 8, "lower_better": False}))
        monkeypatch.setenv("RT_ROOT", str(tmp_path))
        good = run(rt_config(tmp_path / "out", tasks=["rt-score"], model_options={"noise": 0.2}))
        poor = run(rt_config(tmp_path / "out", tasks=["rt-score"], model_options={"noise": 1.5}))
        metrics = good.ran[0].metrics
        assert metrics["mae"] < poor.ran[0].metrics["mae"]
        assert metrics["ci"]["mae"]["low"] <= metrics["mae"] <= metrics["ci"]["mae"]["high"]
        board = read_leaderboard(good.leaderboard)
        assert {"mae", "mae_ci_low", "mae_ci_high"} <= set(board.columns)
        compared = {c.difference.metric: c.difference for c in
                    compare_runs(RunView.load(good.run_dir), RunView.load(poor.run_dir), resamples=300)}
        assert compared["mae"].verdict == "A better"   # lower error wins, read the metric's way
        report = build_report([RunView.load(good.run_dir)], resamples=200)
        assert "mae" in report.leaderboard.columns
    finally:
        scoring.METRICS[:] = before


def test_a_full_disk_names_the_prediction_log(tmp_path, monkeypatch, capsys):
    """ENOSPC while appending predictions: one line naming the file, finished work kept."""
    import errno

    from qbench.results import folder as rundir

    (tmp_path / "rt.json").write_text(json.dumps({"n": 10, "seed": 5, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    real = rundir.PredictionLog.write
    calls = []

    def full_after_one_batch(self, rows):
        calls.append(len(rows))
        if len(calls) > 1:
            self._file.write = lambda text: (_ for _ in ()).throw(
                OSError(errno.ENOSPC, "No space left on device"))
        return real(self, rows)
    monkeypatch.setattr(rundir.PredictionLog, "write", full_after_one_batch)
    code = main(["run", "--model", "rt-model", "--tasks", "rt-score", "--no-progress",
                 "--batch-size", "4", "--output", str(tmp_path / "out"), "--run-name", "r"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err
    assert f"cannot use {tmp_path / 'out' / 'r' / 'predictions.jsonl'}: No space left on device" in err
    assert len((tmp_path / "out" / "r" / "predictions.jsonl").read_text().splitlines()) == 4


def test_a_full_disk_while_writing_the_manifest_names_it_and_leaves_no_temporary(
        tmp_path, monkeypatch, capsys):
    import errno

    from qbench.core import files as mf

    (tmp_path / "rt.json").write_text(json.dumps({"n": 10, "seed": 5, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))

    def full(self, text, encoding=None):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(mf.Path, "write_text", full)
    code = main(["run", "--model", "rt-model", "--tasks", "rt-score", "--no-progress",
                 "--output", str(tmp_path / "out"), "--run-name", "r"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err
    assert f"cannot use {tmp_path / 'out' / 'r' / 'manifest.json'}: No space left on device" in err
    assert not list((tmp_path / "out" / "r").glob(".*.tmp"))


def test_a_killed_writers_temporary_files_are_removed_by_the_next_writer(tmp_path, monkeypatch):
    (tmp_path / "rt.json").write_text(json.dumps({"n": 10, "seed": 5, "lower_better": False}))
    monkeypatch.setenv("RT_ROOT", str(tmp_path))
    first = run(rt_config(tmp_path / "out", tasks=["rt-score"], run_name="r"))
    left = [first.run_dir / ".manifest.json.abc123.tmp", tmp_path / "out" / ".leaderboard.csv.x.tmp"]
    for path in left:
        path.write_text("{half a fi")   # what a kill -9 mid-write leaves
    run(rt_config(tmp_path / "out", tasks=["rt-score"], run_name="r"))
    assert not any(path.exists() for path in left)
