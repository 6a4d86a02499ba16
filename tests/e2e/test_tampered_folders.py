"""A damaged or edited run folder can neither crash the readers nor pass its figures as measured:
the leaderboard, report, compare and a later run into the same output folder leave it out with
one line naming the folder and the field, and show every other folder as before."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import RT_PLUGIN
from qbench.cli.main import main
from qbench.core import registry
from qbench.results.leaderboard import read_leaderboard
from qbench.run.runner import RunConfig, run


@pytest.fixture(autouse=True)
def rt_plugin():
    registry.include(RT_PLUGIN)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two good runs in one output folder: A stays as written, B (a marked subset) is the one
    tampered with (each test works on a fresh copy)."""
    registry.include(RT_PLUGIN)
    root = tmp_path_factory.mktemp("tamper")
    (root / "rt.json").write_text(json.dumps({"n": 30, "seed": 3, "lower_better": False}))
    import os
    os.environ["RT_ROOT"] = str(root)
    config = dict(model="rt-model", tasks=["rt-score"], output_dir=root / "results",
                  progress=False, ci_resamples=100)
    a = run(RunConfig(run_name="a", **config)).run_dir
    b = run(RunConfig(run_name="b", model_options={"noise": 0.9}, limit=20, **config)).run_dir
    return root, a, b


@pytest.fixture
def runs(two_runs, tmp_path, monkeypatch):
    import shutil
    root, a, b = two_runs
    shutil.copytree(root / "results", tmp_path / "results")
    monkeypatch.setenv("RT_ROOT", str(root))
    return tmp_path / "results", tmp_path / "results" / "a", tmp_path / "results" / "b"


def edit(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def metrics(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda folder: edit(folder / "metrics.json", lambda m: change(m["rt-score"]))


def manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda folder: edit(folder / "manifest.json", change)


TAMPERS = {
    # field: what the note names
    "malformed ci": (metrics(lambda e: e["ci"].update(srcc={"low": "x"})), "ci.srcc"),
    "n as text": (metrics(lambda e: e.update(n="lots")), "rt-score.n"),
    "plcc as text": (metrics(lambda e: e.update(plcc="high")), "rt-score.plcc"),
    "plcc edited": (metrics(lambda e: e.update(plcc=0.999)), "digest does not match"),
    "subset mark cleared": (metrics(lambda e: e.update(subset=None, status="ok")),
                            "digest does not match"),
    "problems cleared": (manifest(lambda m: m["tasks"]["rt-score"].update(problems=["x"])),
                         "digest does not match"),
    "entry a list": (lambda f: edit(f / "metrics.json", lambda m: m.update({"rt-score": [1]})),
                     "expected an object"),
    "task facts a string": (manifest(lambda m: m["tasks"].update({"rt-score": "x"})),
                            "tasks.rt-score"),
    "direction flipped": (manifest(lambda m: m["tasks"]["rt-score"].update(lower_better=True)),
                          "digest does not match"),
    "schema 0": (manifest(lambda m: m.update(schema_version=0)), "schema_version 0"),
    "schema -7": (manifest(lambda m: m.update(schema_version=-7)), "schema_version -7"),
    "schema true": (manifest(lambda m: m.update(schema_version=True)), "schema_version True"),
    "schema 2": (manifest(lambda m: m.update(schema_version=2)), "older qbench"),
    "records edited": (lambda f: (f / "predictions.jsonl").write_text(
        (f / "predictions.jsonl").read_text().replace('"score": ', '"score": 1', 1)),
        "not computed from the predictions"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_a_tampered_folder_is_left_out_with_one_line_and_the_others_stay(runs, capsys, name):
    results, a, b = runs
    tamper, named = TAMPERS[name]
    tamper(b)
    assert main(["leaderboard", "--output", str(results), "--no-published"]) == 0
    out, err = capsys.readouterr()
    (note,) = [line for line in err.splitlines() if str(b) in line]
    assert note.startswith(f"leaderboard: left out {b}") and named in note, note
    board = read_leaderboard(results / "leaderboard.csv")
    assert list(board["run_id"]) == ["a"] and "Traceback" not in err
    # a later run into the same output folder finishes and writes its leaderboard
    assert main(["--include", str(RT_PLUGIN), "run", "--model", "rt-model", "--tasks", "rt-score",
                 "--output", str(results), "--run-name", "c", "--no-progress"]) == 0
    assert set(read_leaderboard(results / "leaderboard.csv")["run_id"]) == {"a", "c"}
    capsys.readouterr()
    # compare and report: one line, never a traceback
    assert main(["compare", str(a), str(b), "--resamples", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qbench: error:") and str(b) in err
    assert main(["report", str(a), str(b), "--resamples", "100", "--output",
                 str(results / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(b) in err


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["manifest.json", "metrics.json"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                       st.text(max_size=8), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
       pick=st.integers(0, 10_000))
def test_any_field_replaced_by_any_value_never_crashes_nor_shows(two_runs, tmp_path_factory,
                                                                 which, value, pick):
    """Replace one field anywhere in the file by another JSON value: the leaderboard either
    leaves the folder out or shows exactly what it showed before (a value equal to the old)."""
    import shutil
    root, a, b = two_runs
    results = tmp_path_factory.mktemp("prop") / "results"
    shutil.copytree(root / "results", results)
    before = read_leaderboard(results / "leaderboard.csv")
    path = results / "b" / which
    data = json.loads(path.read_text())
    places: list[tuple[dict | list, object]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                places.append((node, key))
                walk(child)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                places.append((node, index))
                walk(child)
    walk(data)
    container, key = places[pick % len(places)]
    unchanged = container[key] == value and type(container[key]) is type(value)
    container[key] = value
    path.write_text(json.dumps(data))
    from qbench.results.leaderboard import rebuild_leaderboard
    board, notes = rebuild_leaderboard(results)
    after = read_leaderboard(board)
    shown_b = after[after["run_id"] == "b"]
    if unchanged:
        return
    assert shown_b.empty and any(str(results / "b") in note for note in notes)
    mine = before[before["run_id"] == "a"].dropna(axis=1, how="all").reset_index(drop=True)
    pd.testing.assert_frame_equal(after[after["run_id"] == "a"][mine.columns]
                                  .reset_index(drop=True), mine, check_dtype=False)
