"""No figure passes as measured on the published split when it is not: images that never reached
the model, a part of the split chosen on purpose (--limit, an unmerged shard), and merges, whose
folder holds exactly the shards' records, are marked wherever the figures appear and in the
exit status."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TOY_PLUGIN, make_toy_data
from qbench import DataError
from qbench.cli.main import main
from qbench.core import registry
from qbench.results.folder import Manifest
from qbench.results.leaderboard import read_leaderboard
from qbench.run.runner import RunConfig, merge, run


@pytest.fixture(autouse=True)
def toy_plugin():
    registry.include(TOY_PLUGIN)


def toy_run(tmp_path: Path, *extra: str, output: str = "results") -> int:
    return main(["--include", str(TOY_PLUGIN), "run", "--model", "toy-luma", "--tasks", "toy",
                 "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / output),
                 "--batch-size", "4", "--no-progress", *extra])


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())["toy"]


def only_run(output: Path) -> Path:
    (folder,) = [p.parent for p in output.glob("*/manifest.json")]
    return folder


def test_a_missing_image_marks_the_task_and_exits_3(tmp_path, capsys):
    make_toy_data(tmp_path / "data" / "toy", n=40, missing=1)
    assert toy_run(tmp_path) == 3
    err = capsys.readouterr().err
    assert "1 of 40 samples got no answer from the model: 1 image errors" in err
    metrics = metrics_of(only_run(tmp_path / "results"))
    assert metrics["status"] == "deviates" and metrics["failure_counts"] == {"image_error": 1}
    (row,) = read_leaderboard(tmp_path / "results" / "leaderboard.csv").to_dict("records")
    assert bool(row["deviates"]) and row["status"] == "deviates"
    assert main(["leaderboard", "--output", str(tmp_path / "results"), "--layout", "paper",
                 "--tasks", "toy", "--no-published"]) == 0
    table = capsys.readouterr().out
    assert "*" in table and "deviates from the published protocol" in table


@pytest.mark.parametrize("missing", [3, 39])
def test_images_lost_past_the_failure_budget_fail_the_task(tmp_path, capsys, missing):
    make_toy_data(tmp_path / "data" / "toy", n=40, missing=missing)
    assert toy_run(tmp_path) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and f"{missing} of 40 samples got no answer (" in err
    assert metrics_of(only_run(tmp_path / "results"))["status"] == "failed"
    assert read_leaderboard(tmp_path / "results" / "leaderboard.csv").empty


def test_a_corrupt_image_counts_as_a_lost_sample(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=40, corrupt=1)
    assert toy_run(tmp_path) == 3
    assert metrics_of(only_run(tmp_path / "results"))["failure_counts"] == {"image_error": 1}


def test_a_limited_run_is_a_marked_subset(tmp_path, capsys):
    make_toy_data(tmp_path / "data" / "toy", n=40)
    assert toy_run(tmp_path, "--limit", "10") == 3
    err = capsys.readouterr()
    folder = only_run(tmp_path / "results")
    metrics = metrics_of(folder)
    assert metrics["status"] == "subset" and metrics["problems"] == []
    assert metrics["subset"] == "--limit 10: 10 of the split's 40 samples"
    assert "subset" in err.out and folder.name in err.out   # the terminal table: status, run id
    assert "--limit 10: 10 of the split's 40 samples" in err.err
    (row,) = read_leaderboard(tmp_path / "results" / "leaderboard.csv").to_dict("records")
    assert row["subset"] == metrics["subset"] and not row["deviates"]
    main(["leaderboard", "--output", str(tmp_path / "results"), "--tasks", "toy",
          "--no-published"])
    rows = capsys.readouterr().out
    assert folder.name in rows and "subset" in rows
    main(["leaderboard", "--output", str(tmp_path / "results"), "--layout", "paper", "--tasks",
          "toy", "--no-published", "--format", "latex"])
    latex = capsys.readouterr().out
    assert r"$^{\P}$" in latex and "a part of the split" in latex


def test_a_limit_that_covers_the_split_is_not_a_subset(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=12)
    assert toy_run(tmp_path, "--limit", "50") == 0


def test_an_unmerged_shard_is_a_subset_and_its_siblings_share_one_stem(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=30)
    assert toy_run(tmp_path, "--shard", "0/2") == 3
    assert toy_run(tmp_path, "--shard", "1/2") == 3
    shards = sorted((tmp_path / "results").glob("*-shard*of*"))
    assert len(shards) == 2 and len({p.name.rsplit("-shard", 1)[0] for p in shards}) == 1
    assert metrics_of(shards[0])["subset"].startswith("--shard 0/2: ")
    assert toy_run(tmp_path, output="whole") == 0
    assert main(["merge", *map(str, shards), "--output", str(tmp_path / "results")]) == 0
    merged = tmp_path / "results" / only_run(tmp_path / "whole").name   # the unsharded run's id
    assert metrics_of(merged)["status"] == "ok" and metrics_of(merged)["subset"] is None


def shard_runs(tmp_path: Path, count: int, output: str = "shards") -> list[Path]:
    for index in range(count):
        run(RunConfig(model="toy-luma", tasks=["toy"], data_root=tmp_path / "data",
                      output_dir=tmp_path / output, batch_size=4, progress=False,
                      shard=(index, count)))
    return sorted((tmp_path / output).glob("*-shard*of*"))


def test_merge_names_a_missing_or_repeated_shard(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=30)
    first, second, third = shard_runs(tmp_path, 3)
    with pytest.raises(DataError, match=r"^merge: shard 1 of 3 missing \(give every shard"):
        merge([first, third], tmp_path / "merged")
    with pytest.raises(DataError, match=r"^merge: shard 0 of 3 given twice"):
        merge([first, first, second, third], tmp_path / "merged")


def test_merge_refuses_a_folder_holding_another_run_unless_told(tmp_path, capsys):
    make_toy_data(tmp_path / "data" / "toy", n=30)
    shards = shard_runs(tmp_path, 2, output="results")
    assert toy_run(tmp_path) == 0   # the unsharded run, into the folder merge would write
    whole = only_run_named(tmp_path / "results")
    before = (whole / "predictions.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["merge", *map(str, shards), "--output", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{whole} holds a run that was not merged" in err
    assert (whole / "predictions.jsonl").read_bytes() == before
    assert main(["merge", *map(str, shards), "--output", str(tmp_path / "results"),
                 "--replace"]) == 0
    assert main(["merge", *map(str, shards), "--output", str(tmp_path / "results")]) == 0
    merged = [json.loads(line) for line in (whole / "predictions.jsonl").read_text().splitlines()]
    from_shards = [json.loads(line) for s in shards
                   for line in (s / "predictions.jsonl").read_text().splitlines()]
    assert sorted(merged, key=lambda r: r["sample_id"]) == sorted(from_shards,
                                                                 key=lambda r: r["sample_id"])


def only_run_named(output: Path) -> Path:
    (folder,) = [p for p in output.iterdir() if p.is_dir() and "-shard" not in p.name]
    return folder


def test_merge_refuses_an_unfinished_shard(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=30)
    first, second = shard_runs(tmp_path, 2)
    # a kill before the task was scored: records written, no metrics entry
    (second / "metrics.json").write_text("{}")
    lines = (second / "predictions.jsonl").read_text().splitlines()
    (second / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(DataError, match=rf"shard 1 of 2 \({second}\) did not finish task toy: "
                                        rf"3 of {len(lines)} samples have a prediction"):
        merge([first, second], tmp_path / "merged")


def test_merge_refuses_a_shard_holding_another_shards_records(tmp_path):
    make_toy_data(tmp_path / "data" / "toy", n=30)
    first, second = shard_runs(tmp_path, 2)
    relabelled = tmp_path / "shards" / second.name.replace("shard1of2", "shard1of2-copy")
    shutil.copytree(first, relabelled)
    data = json.loads((relabelled / "manifest.json").read_text())
    data["config"]["shard"] = [1, 2]
    (relabelled / "manifest.json").write_text(json.dumps(data))   # an edit: its digest is off
    with pytest.raises(DataError, match=r"changed after qbench wrote it"):
        merge([first, relabelled], tmp_path / "merged")
    manifest = Manifest.from_json(json.loads((first / "manifest.json").read_text()), first)
    manifest.config["shard"] = [1, 2]   # resealed, as a careful forger would
    (relabelled / "manifest.json").write_text(json.dumps(manifest.to_json()))
    with pytest.raises(DataError, match=r"shard 1 of 2 \(.*copy\) holds predictions of shard 0"):
        merge([first, relabelled], tmp_path / "merged")


def leaderboard_view(output: Path) -> dict:
    (row,) = read_leaderboard(output / "leaderboard.csv").to_dict("records")
    keep = ("status", "deviates", "subset", "n", "n_ok", "plcc", "plcc_logistic", "srcc", "krcc",
            "rmse", "rmse_logistic")
    return {k: row.get(k) for k in keep}


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(missing=st.sets(st.integers(0, 23), max_size=4), shards=st.integers(2, 4))
def test_merged_shards_report_what_one_run_on_the_same_images_reports(tmp_path_factory, missing,
                                                                        shards):
    root = tmp_path_factory.mktemp("prop")
    make_toy_data(root / "data" / "toy", n=24)
    for index in missing:
        (root / "data" / "toy" / f"img{index:03d}.png").unlink()
    config = dict(model="toy-luma", tasks=["toy"], data_root=root / "data", batch_size=4,
                  progress=False)
    whole = run(RunConfig(output_dir=root / "whole", **config))
    parts = shard_runs(root, shards)
    merged = merge(parts, root / "merged")
    assert merged.exit_code == whole.exit_code
    if whole.exit_code == 1:   # lost past the budget: no row either way
        assert read_leaderboard(root / "merged" / "leaderboard.csv").empty
        return
    a, b = leaderboard_view(root / "whole"), leaderboard_view(root / "merged")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, nan_ok=True) \
            if isinstance(a[key], float) else a[key] == b[key], key
