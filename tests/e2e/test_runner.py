import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from helpers import TOY_PLUGIN, make_toy_data
from qbench.cli.main import main
from qbench.core import registry
from qbench.results.leaderboard import read_leaderboard
from qbench.run.runner import RunConfig, merge, run


@pytest.fixture(autouse=True)
def toy_plugin():
    registry.include(TOY_PLUGIN)


def toy_config(tmp_path: Path, **kw) -> RunConfig:
    return RunConfig(model="toy-luma", tasks=["toy"], data_root=tmp_path / "data",
                     output_dir=tmp_path / "results", batch_size=4, progress=False, **kw)


def test_run_writes_predictions_metrics_and_leaderboard(tmp_path):
    make_toy_data(tmp_path / "data" / "toy")
    result = run(toy_config(tmp_path))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["toy"]
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["n"] == 40 and metrics["parsed_fraction"] == 1.0
    pred = [r["score"] for r in sorted(rows, key=lambda r: r["sample_id"])]
    gt = [r["truth"]["mos"] for r in sorted(rows, key=lambda r: r["sample_id"])]
    assert metrics["srcc"] == pytest.approx(stats.spearmanr(pred, gt)[0])
    assert metrics["srcc"] > 0.5  # brightness was built to track MOS
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["tasks"]["toy"]["n"] == 40 and manifest["versions"]["python"]
    # the leaderboard round-trips through pandas
    board = read_leaderboard(result.leaderboard)
    row = board[(board["task"] == "toy") & (board["run_id"] == result.run_dir.name)].iloc[0]
    assert row["n"] == 40 and row["srcc"] == pytest.approx(metrics["srcc"])
    assert row["model"] == "toy-luma" and row["source"] == "measured"
    again = pd.read_csv(result.leaderboard)
    pd.testing.assert_frame_equal(board, again)


def test_corrupt_and_missing_images_are_counted_failures(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=20, corrupt=2, missing=1)
    result = run(toy_config(tmp_path))
    metrics = result.ran[0].metrics
    assert metrics["n"] == 20 and metrics["n_ok"] == 17
    assert metrics["failure_counts"] == {"image_error": 3}
    assert sorted(metrics["failures"]["image_error"]) == ["img000.png", "img001.png", "img002.png"]
    rows = {json.loads(l)["sample_id"]: json.loads(l)
            for l in (result.run_dir / "predictions.jsonl").read_text().splitlines()}
    assert "not found" in rows["img002.png"]["error"] and "cannot decode" in rows["img000.png"]["error"]


def test_missing_data_is_a_skip_with_the_path(tmp_path):
    result = run(toy_config(tmp_path))
    assert not result.ran
    assert "labels.csv not found in" in result.outcomes[0].skipped
    assert str(tmp_path / "data" / "toy") in result.outcomes[0].skipped


def test_cli_all_fails_only_when_nothing_runs(tmp_path, capsys):
    args = ["--include", str(TOY_PLUGIN), "run", "--model", "toy-luma", "--tasks", "all",
            "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2   # the data root does not exist (a typo): one line
    (tmp_path / "data").mkdir()
    assert main(args) == 1
    make_toy_data(tmp_path / "data" / "toy", n=12)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "skipped" in err  # every other task is reported with what was looked for


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["run", "--model", "no-such-model", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qbench: error:") and "unknown model" in err and "Traceback" not in err
    assert main(["run", "--model", "precomputed", "--model-path", str(tmp_path / "nope.csv"),
                 "--output", str(tmp_path)]) == 2
    assert "--model-path" in capsys.readouterr().err
    assert main(["--include", str(tmp_path / "missing.py"), "list"]) == 2


def test_include_registers_task_and_model_for_list(tmp_path, capsys):
    make_toy_data(tmp_path / "data" / "toy", n=5)
    assert main(["--include", str(TOY_PLUGIN), "list", "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "toy-luma" in out and f"ready: {tmp_path / 'data' / 'toy'}" in out.replace("\n    ", " ")


def test_entry_point_plugins_are_loaded(tmp_path, installed_distribution):
    package = tmp_path / "site"
    (package / "qbench_extra_plugin").mkdir(parents=True)
    (package / "qbench_extra_plugin" / "__init__.py").write_text(
        "from qbench import Model, register_model\n"
        "@register_model('extra-model')\n"
        "class Extra(Model):\n    name = 'extra-model'\n"
        "    def predict(self, samples, images):\n        return []\n")
    installed_distribution("qbench-extra-plugin", "[qbench.models]\nextra = qbench_extra_plugin\n")
    registry.MODELS.pop("extra-model", None)
    model = registry.create_model("extra-model")
    assert type(model).__name__ == "Extra"


def test_shards_merge_to_the_unsharded_result(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=30)
    whole = run(toy_config(tmp_path)).ran[0].metrics
    shard_dirs = []
    for i in range(3):
        config = toy_config(tmp_path, shard=(i, 3))
        config.output_dir = tmp_path / "shards"
        shard_dirs.append(run(config).run_dir)
    sizes = [json.loads((d / "manifest.json").read_text())["tasks"]["toy"]["n_selected"] for d in shard_dirs]
    assert sum(sizes) == 30 and all(sizes)
    merged = merge(shard_dirs, tmp_path / "merged").ran[0].metrics
    for key in ("n", "srcc", "plcc", "krcc", "plcc_logistic"):
        assert merged[key] == pytest.approx(whole[key])


def _run_cli(tmp_path: Path, output: str, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qbench", "--include", str(TOY_PLUGIN), "run", "--model", "toy-luma",
           "--tasks", "toy", "--data-root", str(tmp_path / "data"), "--output",
           str(tmp_path / output), "--batch-size", "2", "--no-progress", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_resume_after_kill_finishes_only_the_rest(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=40)
    calls = tmp_path / "calls.txt"
    # the model appends every sample id it is asked about to calls.txt
    proc = _run_cli(tmp_path, "results", ["--model-arg", "delay=0.15", "--run-name", "r",
                                          "--model-arg", f"log={calls}"])
    predictions = tmp_path / "results" / "r" / "predictions.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if predictions.exists() and len(predictions.read_text().splitlines()) >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = calls.read_text().split()
    finished_before = len(predictions.read_text().splitlines())
    assert 10 <= finished_before < 40, "the kill must land mid-run"
    with predictions.open("a") as f:
        f.write('{"task": "toy", "sample_id": "img0')  # a torn line, as a kill mid-write leaves
    rerun = _run_cli(tmp_path, "results", ["--model-arg", "delay=0.15", "--run-name", "r",
                                           "--model-arg", f"log={calls}"])
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read().decode()
    second = calls.read_text().split()[len(first):]
    done_before = {json.loads(l)["sample_id"] for l in predictions.read_text().splitlines()[:finished_before]}
    assert set(second).isdisjoint(done_before) and len(set(first + second)) == 40
    assert len(predictions.read_text().splitlines()) == 40
    resumed = json.loads((tmp_path / "results" / "r" / "metrics.json").read_text())["toy"]
    straight = _run_cli(tmp_path, "straight", [])
    assert straight.wait(timeout=120) == 0
    (uninterrupted,) = [json.loads(p.read_text())["toy"] for p in (tmp_path / "straight").glob("*/metrics.json")]
    for key in ("n", "n_ok", "srcc", "plcc", "plcc_logistic", "krcc"):
        assert resumed[key] == pytest.approx(uninterrupted[key])


def test_changed_data_is_not_mixed_into_a_finished_run(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=10)
    first = run(toy_config(tmp_path))
    labels = tmp_path / "data" / "toy" / "labels.csv"
    labels.write_text(labels.read_text().replace("img000.png,", "img000.png,9"))
    again = run(toy_config(tmp_path))
    assert again.run_dir == first.run_dir and not again.ran
    assert "data changed" in again.outcomes[0].skipped


@pytest.mark.slow
def test_bootstrap_intervals_reach_metrics_and_leaderboard(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=30)
    result = run(toy_config(tmp_path, ci_resamples=500))
    metrics = result.ran[0].metrics
    srcc = metrics["ci"]["srcc"]
    assert srcc["resamples"] == 500 and srcc["low"] <= metrics["srcc"] <= srcc["high"]
    assert srcc["estimate"] == pytest.approx(metrics["srcc"])
    row = read_leaderboard(result.leaderboard).iloc[0]
    assert row["srcc_ci_low"] == pytest.approx(srcc["low"]) and row["srcc_ci_high"] == pytest.approx(srcc["high"])


def test_include_works_before_and_after_the_verb(tmp_path, capsys):
    make_toy_data(tmp_path / "data" / "toy", n=6)
    for argv in (["--include", str(TOY_PLUGIN), "run"], ["run", "--include", str(TOY_PLUGIN)]):
        code = main([*argv, "--model", "toy-luma", "--tasks", "toy", "--data-root",
                     str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--no-progress"])
        assert code == 0, capsys.readouterr().err
    assert main(["list", "--include", str(TOY_PLUGIN)]) == 0
    assert "toy-luma" in capsys.readouterr().out


def test_every_run_option_is_one_runconfig_field():
    """The `qbench run` parser is generated from RunConfig: each field is one flag, parsed into
    the field's value (an option added to RunConfig needs no other edit)."""
    import dataclasses

    from qbench.cli.main import build_parser
    from qbench.core.options import flags, from_args
    argv = ["run", "--model", "m", "--tasks", "a,b", "--model-path", "/w", "--model-arg", "k=1",
            "--model-arg", "t=true", "--data-root", "/d", "--data", "a=/x", "--split", "s",
            "--batch-size", "3", "--limit", "5", "--seed", "7", "--shard", "1/4", "--output", "/o",
            "--run-name", "r", "--device", "cpu", "--workers", "2", "--include", "p.py",
            "--no-progress", "--ci", "100", "--task-arg", "a.x=none", "--max-pixels", "99",
            "--max-failure-rate", "0.5", "--wait"]
    config = from_args(RunConfig, build_parser().parse_args(argv))
    assert {f.name for f in dataclasses.fields(RunConfig)} == {f.name for f, _ in flags(RunConfig)}
    assert config == RunConfig(
        model="m", tasks=["a", "b"], model_path=Path("/w"), model_options={"k": 1, "t": True},
        data_root=Path("/d"), data_paths={"a": Path("/x")}, split="s", batch_size=3, limit=5,
        seed=7, shard=(1, 4), output_dir=Path("/o"), run_name="r", device="cpu", workers=2,
        include=[Path("p.py")], progress=False, ci_resamples=100, task_options={"a": {"x": None}},
        max_pixels=99, max_failure_rate=0.5, wait=True)
    assert from_args(RunConfig, build_parser().parse_args(["run"])) == RunConfig()
