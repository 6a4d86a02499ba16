"""Tasks from a YAML file (tasks/yaml_task.py): score and comparison sets end to end through
`qbench run` with the precomputed model, degradation words, Parquet and saved `datasets`
folders, every class of bad task file, path-escape refusal, data check, `--include` folders,
the `qbench.task_files` entry points and the worked examples of examples/tasks/."""
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import stats

from qbench import DataError
from qbench.cli.main import main
from qbench.core import registry
from qbench.core.registry import RegistryError, get_task, task_names

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"


@pytest.fixture(autouse=True)
def restore_registry():
    """Each test registers its own task files; none outlives it."""
    registry.load_plugins()
    saved = dict(registry.TASKS)
    yield
    registry.TASKS.clear()
    registry.TASKS.update(saved)


def png(path: Path, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), level % 256, np.uint8)).save(path)


def task_file(folder: Path, file: str = "task.yaml", **keys) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file).write_text(yaml.safe_dump(keys, sort_keys=False))
    return folder / file


def run_dir(output: Path) -> Path:
    (folder,) = [p for p in output.iterdir() if p.is_dir()]
    return folder


def loaded(path: Path, split: str | None = None):
    name = task_names([str(path)])[0]
    task = get_task(name)
    return task.load_split(task.locate(None), split or task.default_split)


# ------------------------------------------------------------------------------ score, end to end

def score_set(folder: Path, lower_better: bool) -> tuple[Path, dict[str, float]]:
    """16 images (12 test, 4 train) and three rows to drop or merge; the first MOS of each."""
    rng = np.random.default_rng(1)
    rows, first = [], {}
    for i in range(16):
        name = f"p{i:02d}.png"
        png(folder / "images" / name, i * 10)
        first[name] = round(float(rng.uniform(1, 5)), 3)
        rows.append(f"{name},{first[name]},{'test' if i < 12 else 'train'}")
    rows += ["p03.png,4.999,test",    # p03 again: the first row counts
             "p04.png,,test",         # no score
             "p05.png,7.5,test"]      # outside score_range
    (folder / "labels.csv").write_text("path,mos,split\n" + "\n".join(rows) + "\n")
    path = task_file(folder, file="my-scores.yaml", name="my-scores", kind="score",
                     data="labels.csv", images="images/", columns={"image": "path", "score": "mos"},
                     split_column="split", lower_better=lower_better, score_range=[1, 5],
                     expected_count={"test": 12, "train": 4})
    return path, first


@pytest.mark.slow
@pytest.mark.parametrize("lower_better", [False, True])
def test_score_yaml_runs_end_to_end_with_intervals(tmp_path, lower_better, capsys):
    path, first = score_set(tmp_path / "set", lower_better)
    test = [f"p{i:02d}.png" for i in range(12)]
    rng = np.random.default_rng(2)
    answers = {name: first[name] + float(rng.normal(0, 0.8)) for name in test}
    preds = tmp_path / "preds.csv"
    preds.write_text("image,score\n" + "".join(f"{n},{s}\n" for n, s in answers.items()))
    code = main(["run", "--model", "precomputed", "--model-path", str(preds), "--tasks", str(path),
                 "--output", str(tmp_path / "out"), "--ci", "60", "--no-progress"])
    assert code == 3, capsys.readouterr().err   # 3 of 19 rows dropped or merged: reported
    folder = run_dir(tmp_path / "out")
    metrics = json.loads((folder / "metrics.json").read_text())["my-scores"]
    pred = [answers[n] for n in test]
    gt = [(-1 if lower_better else 1) * first[n] for n in test]
    assert metrics["n"] == 12 and metrics["parsed_fraction"] == 1.0
    assert metrics["srcc"] == pytest.approx(stats.spearmanr(pred, gt)[0])
    assert metrics["plcc"] == pytest.approx(stats.pearsonr(pred, gt)[0])
    assert metrics["krcc"] == pytest.approx(stats.kendalltau(pred, gt)[0])
    for name in ("srcc", "plcc", "krcc", "plcc_logistic"):
        ci = metrics["ci"][name]
        assert ci["resamples"] == 60 and ci["low"] <= metrics[name] <= ci["high"]
    facts = json.loads((folder / "manifest.json").read_text())["tasks"]["my-scores"]
    assert (facts["rows_read"], facts["rows_dropped"], facts["repeated"]) == (19, 3, 1)
    assert facts["lower_better"] is lower_better and facts["mos_range"] == [1.0, 5.0]
    assert facts["expected_count"] == 12 and "'split'" in facts["split_source"]
    assert "labels.csv" in facts["split_source"] and str(path.resolve()) in facts["source"]
    notes = " ".join(facts["notes"])
    assert "1 with a missing or non-numeric score" in notes and "outside score_range [1, 5]" in notes
    assert "p03.png (" in notes   # the repeated image, named with its scores
    # [1, 5] ground truth: rescaled over the whole file's kept rows (both splits), flipped for DMOS
    low, high = min(first.values()), max(first.values())
    truth = {json.loads(line)["sample_id"]: json.loads(line)["truth"]
             for line in (folder / "predictions.jsonl").read_text().splitlines()}
    for name in test:
        norm = 4 * (first[name] - low) / (high - low) + 1
        assert truth[name]["mos"] == pytest.approx(first[name])
        assert truth[name]["mos_norm"] == pytest.approx(6 - norm if lower_better else norm)


# ------------------------------------------------------------------------------ comparison, end to end

PAIRS = [  # (id, spelling of the choice in the file, canonical choice, the model's answer)
    ("q1", "Image A", "Image A", "Image A"),
    ("q2", "B", "Image B", "Image A"),
    ("q3", "similar", "Similar", "Similar"),
    ("q4", "A", "Image A", "Image A"),
    ("q5", "image b", "Image B", "Image B"),
    ("q6", "Image B", "Image B", None),        # no answer: counts as wrong
    ("q7", "Similar", "Similar", "Image B"),
    ("q8", "a", "Image A", "Image A"),
]


def comparison_set(folder: Path) -> Path:
    records = []
    for i, (pair, said, _, _) in enumerate(PAIRS):
        names = [f"ref/{i}.png", f"x/{i}.png", f"y/{i}.png"]
        for k, name in enumerate(names):
            png(folder / "imgs" / name, 40 * k + i)
        records.append({"pair": pair, "lr": names[0], "a": names[1], "b": names[2], "better": said})
    records.append({"pair": "q9", "lr": "ref/0.png", "a": "x/0.png", "b": "y/0.png", "better": "C"})
    records.append({"pair": "q1", "lr": "ref/1.png", "a": "x/1.png", "b": "y/1.png",
                    "better": "Image B"})   # q1 again: the first record counts
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return task_file(folder, file="pairs.yaml", name="my-pairs", kind="comparison",
                     data="pairs.jsonl", images="imgs",
                     columns={"id": "pair", "reference": "lr", "image_a": "a", "image_b": "b",
                              "choice": "better"})


def test_comparison_yaml_runs_end_to_end_with_intervals(tmp_path, capsys):
    path = comparison_set(tmp_path / "set")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"image": pair, "choice": answer}) + "\n"
                             for pair, _, _, answer in PAIRS if answer))
    code = main(["run", "--model", "precomputed", "--model-path", str(preds), "--tasks",
                 f"{path},my-pairs", "--output", str(tmp_path / "out"), "--ci", "300",
                 "--no-progress", "--max-failure-rate", "0.2"])
    # 2 of 10 records dropped or merged, and 1 of 8 samples has no row in the predictions:
    # lost, within this budget (past the default 0.05 it fails the task)
    assert code == 3, capsys.readouterr().err
    folder = run_dir(tmp_path / "out")
    metrics = json.loads((folder / "metrics.json").read_text())["my-pairs"]
    right = sum(answer == truth for _, _, truth, answer in PAIRS)
    assert right == 5 and metrics["n"] == 8
    assert metrics["accuracy"] == pytest.approx(right / 8)
    assert metrics["failure_counts"] == {"missing": 1}
    # rows: truth Image A, Image B, Similar; columns: the answer (no answer: no column)
    assert metrics["confusion"]["matrix"] == [[3, 0, 0], [1, 1, 0], [0, 1, 1]]
    ci = metrics["ci"]["accuracy"]
    assert ci["resamples"] == 300 and ci["low"] <= metrics["accuracy"] <= ci["high"]
    facts = json.loads((folder / "manifest.json").read_text())["tasks"]["my-pairs"]
    assert (facts["rows_read"], facts["rows_dropped"], facts["repeated"]) == (10, 2, 1)
    notes = " ".join(facts["notes"])
    assert "not Image A, Image B or Similar (e.g. 'C')" in notes
    assert "q1 (Image A, Image B)" in notes
    truth = {json.loads(line)["sample_id"]: json.loads(line)["truth"]["choice"]
             for line in (folder / "predictions.jsonl").read_text().splitlines()}
    assert truth == {pair: canonical for pair, _, canonical, _ in PAIRS}


def test_comparison_ids_default_to_the_three_paths(tmp_path):
    folder = tmp_path / "set"
    comparison_set(folder)
    path = task_file(folder, file="no-id.yaml", name="no-id", kind="comparison",
                     data="pairs.jsonl", images="imgs",
                     columns={"reference": "lr", "image_a": "a", "image_b": "b", "choice": "better"})
    data = loaded(path)
    assert data.samples[0].id == "ref/0.png|x/0.png|y/0.png"
    assert data.samples[0].images == tuple(str(folder / "imgs" / p)
                                           for p in ("ref/0.png", "x/0.png", "y/0.png"))


# ------------------------------------------------------------------------------ degradation

def test_degradation_words_pass_through_the_protocol(tmp_path, capsys):
    rows = [("a.png", "noise", "1", ("noise", "slight")),
            ("b.png", "compression", "serious", ("jpeg", "serious")),
            ("c.png", "Gaussian blur", "3", ("blur", "obvious")),
            ("d.png", "darken", "5.0", ("darken", "catastrophic")),
            ("e.png", "null", "null", ("null", "null")),      # the protocol's words, not NA
            ("f.png", "none", "0", ("null", "null")),
            ("g.png", "rain", "2", None),                      # unknown class
            ("h.png", "noise", "7", None),                     # unknown level
            ("i.png", "noise", "0", None),                     # class and level disagree
            ("j.png", "blur", "", None)]                       # no level
    folder = tmp_path / "set"
    for i, (name, *_) in enumerate(rows):
        png(folder / name, 20 * i)
    (folder / "dist.csv").write_text("img,cls,sev\n" + "".join(f"{n},{c},{s}\n" for n, c, s, _ in rows))
    path = task_file(folder, file="dist.yaml", name="my-dist", kind="degradation", data="dist.csv",
                     columns={"image": "img", "class": "cls", "level": "sev"})
    data = loaded(path)
    assert {s.id: (s.distortion_class, s.severity) for s in data.samples} == {
        n: truth for n, _, _, truth in rows if truth}
    assert (data.rows_read, data.rows_dropped, data.split, data.split_source) == (
        10, 4, "test", "every row of dist.csv")
    assert "1 with a class the protocol does not know (e.g. 'rain')" in data.notes[0]
    assert "1 with a level the protocol does not know (e.g. '7')" in data.notes[0]
    # and through `qbench run`: the model says noise/slight everywhere
    preds = tmp_path / "preds.csv"
    preds.write_text("image,distortion_class,severity\n" +
                     "".join(f"{n},noise,slight\n" for n, *_ in rows))
    assert main(["run", "--model", "precomputed", "--model-path", str(preds), "--tasks", str(path),
                 "--output", str(tmp_path / "out"), "--no-progress"]) == 3
    metrics = json.loads((run_dir(tmp_path / "out") / "metrics.json").read_text())["my-dist"]
    assert metrics["class_acc"] == {"noise": 1.0, "blur": 0.0, "jpeg": 0.0, "darken": 0.0, "null": 0.0}
    assert metrics["level_acc"]["noise"] == 1.0 and metrics["level_acc"]["blur"] == 0.0


# ------------------------------------------------------------------------------ Parquet, datasets folders

def score_table(folder: Path) -> dict[str, list]:
    names = [f"s{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        png(folder / "images" / name, 30 * i)
    return {"file": names, "quality": [1.5, 2.0, 4.5, 3.0, 2.5, 5.0],
            "part": ["test", "test", "test", "test", "val", "val"]}


def score_yaml(folder: Path, data: str, **extra) -> Path:
    return task_file(folder, file=f"{data}.yaml", name=f"set-{data.replace('.', '-')}",
                     kind="score", data=data, images="images",
                     columns={"image": "file", "score": "quality"}, **extra)


def test_parquet_and_saved_datasets_folders(tmp_path):
    folder = tmp_path / "set"
    table = score_table(folder)
    whole = datasets.Dataset.from_dict(table)
    whole.to_parquet(str(folder / "t.parquet"))
    whole.save_to_disk(str(folder / "saved"))
    pieces = {p: whole.filter(lambda r, p=p: r["part"] == p) for p in ("test", "val")}
    datasets.DatasetDict(pieces).save_to_disk(str(folder / "saved-dict"))

    from_parquet = loaded(score_yaml(folder, "t.parquet", split_column="part"))
    from_folder = loaded(score_yaml(folder, "saved", split_column="part"), "val")
    from_dict = loaded(score_yaml(folder, "saved-dict"))
    assert [s.mos for s in from_parquet.samples] == [1.5, 2.0, 4.5, 3.0]
    assert [(s.id, s.mos) for s in from_folder.samples] == [("s4.png", 2.5), ("s5.png", 5.0)]
    assert [s.mos for s in from_dict.samples] == [1.5, 2.0, 4.5, 3.0]
    assert from_dict.split_source == "split 'test' of the saved dataset saved-dict"
    assert get_task("set-saved-dict").splits == ("test", "val")
    # the [1, 5] scale spans the whole file, not the split: 1.5 -> 1, 5.0 -> 5
    assert [round(s.mos_norm, 6) for s in from_dict.samples] == [1.0, round(4 * 0.5 / 3.5 + 1, 6),
                                                                 round(4 * 3 / 3.5 + 1, 6),
                                                                 round(4 * 1.5 / 3.5 + 1, 6)]


def test_nothing_is_downloaded_or_left_behind(tmp_path, monkeypatch):
    """The annotations are read offline through a temporary cache that is removed: no socket is
    opened, no file appears in the datasets cache or the temporary folder."""
    folder = tmp_path / "set"
    table = score_table(folder)
    rows = zip(table["file"], table["quality"], table["part"])
    (folder / "t.csv").write_text("file,quality,part\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    (folder / "t.jsonl").write_text("".join(json.dumps(dict(zip(table, r))) + "\n"
                                            for r in zip(*table.values())))
    datasets.Dataset.from_dict(table).to_parquet(str(folder / "t.parquet"))

    def refuse(*args, **kwargs):
        raise AssertionError("network access while reading a task file")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    hf_cache = Path(datasets.config.HF_DATASETS_CACHE)
    before = sorted(hf_cache.rglob("*")) if hf_cache.exists() else []
    for data in ("t.csv", "t.jsonl", "t.parquet"):
        assert [s.mos for s in loaded(score_yaml(folder, data, split_column="part")).samples] == \
            [1.5, 2.0, 4.5, 3.0]
    assert list(scratch.iterdir()) == []
    assert (sorted(hf_cache.rglob("*")) if hf_cache.exists() else []) == before


# ------------------------------------------------------------------------------ bad task files

GOOD = {"name": "bad-set", "kind": "score", "data": "labels.csv",
        "columns": {"image": "path", "score": "mos"}}
BAD = [  # (change to the good file, the key the one-line error names, words it says)
    ({"colums": {"image": "path"}}, "colums", "unknown key"),
    ({"data": None}, "data", "missing"),
    ({"kind": "scores"}, "kind", "'score', 'degradation' or 'comparison'"),
    ({"name": "my set"}, "name", "letters, digits, '-' and '_'"),
    ({"name": "all"}, "name", "every task"),
    ({"columns": {"image": "path", "score": "quality"}}, "columns.score", "no column 'quality'"),
    ({"columns": {"image": "path"}}, "columns", "missing score"),
    ({"columns": {"image": "path", "score": "mos", "class": "c"}}, "columns", "unknown class"),
    ({"score_range": [5, 1]}, "score_range", "low < high"),
    ({"score_range": [1]}, "score_range", "should be [low, high], got [1]"),
    ({"score_range": [1, "high"]}, "score_range[1]", "valid number"),
    ({"lower_better": "no"}, "lower_better", "valid boolean"),
    ({"kind": "comparison", "columns": {"reference": "path", "image_a": "path", "image_b": "path",
                                        "choice": "mos"}, "score_range": [1, 5]},
     "score_range", "only score tasks"),
    ({"split_column": "part"}, "split_column", "no column 'part'"),
    ({"split_column": "split", "expected_count": {"val": 3}}, "expected_count.val", "no split 'val'"),
    ({"expected_count": {"test": -1}}, "expected_count.test", "greater than or equal to 0"),
    ({"split_column": "split", "default_split": "dev"}, "default_split", "no split 'dev'"),
    ({"data": "labels.xlsx"}, "data", "cannot read .xlsx files"),
    ({"data": "broken.parquet"}, "data", "not a readable PARQUET file"),
    ({"name": "koniq"}, "name", "built-in task qbench.tasks.koniq.KonIQ"),
]


@pytest.mark.parametrize("change,key,words", BAD, ids=[b[1] + ":" + b[2][:12] for b in BAD])
def test_a_bad_task_file_is_one_line_naming_the_file_and_key(tmp_path, capsys, change, key, words):
    (tmp_path / "labels.csv").write_text("path,mos,split\na.png,3,test\nb.png,4,train\n")
    (tmp_path / "labels.xlsx").write_bytes(b"PK")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    spec = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = task_file(tmp_path, **spec)
    assert main(["data", "check", "--tasks", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"qbench: error: task file {path}: ")
    assert f": {key}: " in err and words in err, err


def test_not_yaml_and_not_a_mapping(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\nkind: score\n")
    listed = tmp_path / "listed.yml"
    listed.write_text("- name: x\n")
    for path, words in ((broken, "not valid YAML"), (listed, "expected a mapping of keys")):
        assert main(["run", "--model", "stats", "--tasks", str(path), "--no-progress",
                     "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"task file {path}: {words}" in err
    assert main(["data", "check", "--tasks", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: not found" in capsys.readouterr().err


def test_two_files_with_one_name_are_an_error_naming_both(tmp_path):
    (tmp_path / "labels.csv").write_text("path,mos\na.png,3\nb.png,4\n")
    first = task_file(tmp_path / "one", **{**GOOD, "data": "../labels.csv"})
    second = task_file(tmp_path / "two", **{**GOOD, "data": "../labels.csv"})
    assert task_names([str(first), str(first)]) == ["bad-set"]   # the same file: no clash
    with pytest.raises(RegistryError, match="name: 'bad-set' is already the name of the task of "
                                            + re.escape(str(first.absolute()))) as error:
        task_names([str(second)])
    assert str(second) in str(error.value)


def test_one_file_by_two_paths_is_one_task(tmp_path, monkeypatch, capsys):
    """A symlink, `./x.yaml` against `x.yaml`, `sub/../x.yaml` and a folder holding the file
    and a link to it all name the task of one file: no clash with itself."""
    (tmp_path / "labels.csv").write_text("path,mos\na.png,3\nb.png,4\n")
    path = task_file(tmp_path, file="x.yaml", **GOOD)
    (tmp_path / "link.yaml").symlink_to("x.yaml")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert task_names(["x.yaml", "./x.yaml", "sub/../x.yaml", "link.yaml",
                         str(path)]) == ["bad-set"]
    assert main(["--include", str(tmp_path), "list"]) == 0, capsys.readouterr().err
    other = task_file(tmp_path / "copy", file="x.yaml", **{**GOOD, "data": "../labels.csv"})
    with pytest.raises(RegistryError, match="is already the name of the task of"):
        task_names([str(other)])   # another file of the same name still clashes


@pytest.mark.parametrize("text,words", [
    ("name: a\nkind: score\nname: b\n", "line 3: name: key given twice (first on line 1)"),
    ("columns: {image: path, score: mos, image: file}\n",
     "line 1: columns.image: key given twice (first on line 1)"),
    ("name: x\n" + "a: " + "[" * 100 + "]" * 100 + "\n", "line 2: nested more than 64 deep"),
    ("name: x\n" + "a: " + "[" * 20_000 + "]" * 20_000 + "\n", "exceeded maximum nesting depth"),
    ("name: !!int x\n", "line 1: 'x' cannot be read as !!int"),
])
def test_yaml_the_loader_refuses_is_one_line_naming_the_file(tmp_path, capsys, text, words):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    assert main(["data", "check", "--tasks", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"qbench: error: task file {path}: ") and words in err, err


def test_binary_task_file_is_named(tmp_path, capsys):
    path = tmp_path / "task.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert main(["data", "check", "--tasks", str(path)]) == 2
    assert " ".join(capsys.readouterr().err.split()) == \
        f"qbench: error: task file {path}: not a text file (byte 8 is NUL): binary?"


def test_long_values_are_cut_short_in_messages(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("path,mos\na.png,3\n")
    path = task_file(tmp_path, **{**GOOD, "columns": {"image": "p" * 100_000, "score": "mos"}})
    assert main(["data", "check", "--tasks", str(path)]) == 2
    err = capsys.readouterr().err
    assert "columns.image: no column 'ppp" in " ".join(err.split()) and len(err) < 400


# ------------------------------------------------------------------------------ paths

@pytest.mark.parametrize("listed", ["../outside.png", "sub/../../outside.png", "/etc/hostname"])
def test_image_paths_leaving_the_images_folder_are_refused(tmp_path, capsys, listed):
    folder = tmp_path / "set"
    png(folder / "images" / "a.png", 10)
    png(folder / "outside.png", 20)
    (folder / "labels.csv").write_text(f"path,mos\na.png,3\n{listed},4\n")
    path = task_file(folder, **{**GOOD, "images": "images"})
    assert main(["data", "check", "--tasks", str(path)]) == 1
    out = capsys.readouterr().out
    assert "bad-set: NOT READY" in out and f"image path {listed!r} leads outside" in out
    assert "refused" in out


def test_data_and_images_outside_the_yaml_folder_are_the_users_choice(tmp_path):
    shared = tmp_path / "shared"
    png(shared / "pics" / "a.png", 10)
    png(shared / "pics" / "b.png", 90)
    (shared / "labels.csv").write_text("path,mos\na.png,3\nb.png,4\n")
    path = task_file(tmp_path / "defs", **{**GOOD, "data": "../shared/labels.csv",
                                           "images": "../shared/pics"})
    data = loaded(path)
    assert [(s.id, s.mos) for s in data.samples] == [("a.png", 3.0), ("b.png", 4.0)]
    assert data.samples[0].images == (str(shared / "pics" / "a.png"),)


def test_missing_data_or_images_are_reported_not_raised(tmp_path, capsys):
    path = task_file(tmp_path, **GOOD)   # labels.csv absent, images folder (this one) present
    assert main(["data", "check", "--tasks", str(path)]) == 1
    assert "NOT READY: bad-set: " + str(tmp_path / "labels.csv") + " not found" in capsys.readouterr().out
    (tmp_path / "labels.csv").write_text("path,mos\na.png,3\n")
    other = task_file(tmp_path, file="other.yaml", **{**GOOD, "name": "other", "images": "nowhere"})
    assert main(["--include", str(other), "list"]) == 0
    assert f"not found: images folder {tmp_path / 'nowhere'} not found" in \
        capsys.readouterr().out.replace("\n    ", " ")


# ------------------------------------------------------------------------------ data check

def test_data_check_reports_missing_and_duplicate_images(tmp_path, capsys):
    folder = tmp_path / "set"
    for name, level in (("a.png", 10), ("b.png", 50), ("c.png", 10)):   # c.png has a's content
        png(folder / name, level)
    (folder / "labels.csv").write_text("path,mos\na.png,3\nb.png,4\nc.png,2\nd.png,1\n")
    path = task_file(folder, **{**GOOD, "expected_count": {"test": 4}})
    assert main(["data", "check", "--tasks", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"bad-set: PROBLEMS: {folder}" in out
    assert "split test: 4 samples (expected 4), 4 image files" in out
    assert "missing images: 1: d.png" in out
    assert "duplicate images (same content): 1 groups: a.png = c.png" in out
    (folder / "labels.csv").write_text("path,mos\na.png,3\nb.png,4\n")
    clean = task_file(folder, file="clean.yaml", **{**GOOD, "name": "clean"})
    assert main(["data", "check", "--tasks", str(clean)]) == 0
    assert "clean: ok" in capsys.readouterr().out


# ------------------------------------------------------------------------------ registration

def test_include_folder_registers_yaml_and_python_files(tmp_path, capsys):
    folder = tmp_path / "plugins"
    score_set(folder / "data", lower_better=False)
    (folder / "data" / "my-scores.yaml").rename(folder / "scores.yml")
    text = (folder / "scores.yml").read_text()
    (folder / "scores.yml").write_text(text.replace("data: labels.csv", "data: data/labels.csv")
                                       .replace("images: images/", "images: data/images/"))
    (folder / "const.py").write_text(
        "from qbench import Model, Prediction, register_model\n"
        "@register_model('const-yaml-test')\n"
        "class Const(Model):\n"
        "    name, kinds, needs_images = 'const-yaml-test', frozenset({'score'}), False\n"
        "    def predict(self, samples, images):\n"
        "        return [Prediction(task=s.task, sample_id=s.id, score=float(len(s.id)))"
        " for s in samples]\n")
    assert main(["--include", str(folder), "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"my-scores \(score, default split test\):\s+ready:\s+"
                     + re.escape(str(folder / "data" / "images")), out)
    assert "const-yaml-test" in out
    code = main(["run", "--include", str(folder), "--model", "const-yaml-test", "--tasks",
                 "my-scores", "--output", str(tmp_path / "out"), "--no-progress"])
    assert code == 3, capsys.readouterr().err
    assert json.loads((run_dir(tmp_path / "out") / "metrics.json").read_text())["my-scores"]["n"] == 12


def test_entry_point_group_registers_packaged_task_files(tmp_path, installed_distribution):
    package = tmp_path / "site" / "qbench_yaml_sets"
    score_set(package, lower_better=False)
    (package / "__init__.py").write_text("")
    installed_distribution("qbench-yaml-sets", "[qbench.task_files]\nsets = qbench_yaml_sets\n")
    task = get_task("my-scores")
    assert task.task_file == package / "my-scores.yaml"
    assert len(task.load_split(task.locate(None), "test").samples) == 12


def test_entry_point_to_a_bad_file_names_the_plugin(tmp_path, installed_distribution):
    site = installed_distribution("bad-sets", "[qbench.task_files]\nbad = bad_sets:PATH\n")
    (site / "bad_sets.py").write_text(f"PATH = {str(tmp_path / 'nothing.yaml')!r}\n")
    with pytest.raises(RegistryError, match=r"plugin 'bad' \(bad_sets:PATH\) failed to load: .*"
                                            r"nothing\.yaml: not found"):
        registry.load_plugins()


# ------------------------------------------------------------------------------ the worked examples

def test_examples_load_and_check_with_images_in_place(tmp_path, capsys):
    copy = shutil.copytree(EXAMPLES, tmp_path / "tasks")
    scores = get_task(task_names([str(copy / "photo-scores.yaml")])[0])
    pairs = get_task(task_names([str(copy / "restoration-pairs.yaml")])[0])
    for task in (scores, pairs):   # no images committed: the task says where they go
        with pytest.raises(DataError, match="images folder .* not found"):
            task.locate(None)
    lines = (copy / "photo-scores" / "annotations.csv").read_text().splitlines()[1:]
    for i, line in enumerate(lines):
        png(copy / "photo-scores" / "images" / line.split(",")[0], 15 * i)
    records = [json.loads(line) for line in
               (copy / "restoration-pairs" / "pairs.jsonl").read_text().splitlines()]
    listed = dict.fromkeys(r[role] for r in records for role in ("lr", "a", "b"))
    for i, name in enumerate(listed):   # each image once, each its own content
        png(copy / "restoration-pairs" / "images" / name, 25 * i)
    for task in (scores, pairs):
        data = task.load_split(task.locate(None), task.default_split)
        assert len(data.samples) == data.expected_count and not data.problems()
    main(["--include", str(copy), "data", "check"])   # every task: the built-ins lack data here
    out = capsys.readouterr().out
    assert "photo-scores: ok" in out and "restoration-pairs: ok" in out
    assert "split test: 8 samples (expected 8), 8 image files" in out
    assert "split test: 6 samples (expected 6), 8 image files" in out   # shared images
    assert main(["data", "check", "--tasks", f"{copy / 'photo-scores.yaml'},"
                 f"{copy / 'restoration-pairs.yaml'}"]) == 0


def test_a_task_file_with_builtin_tasks_in_one_list(tmp_path):
    path, _ = score_set(tmp_path, lower_better=False)
    assert task_names([f"{path}", "koniq", "my-scores"]) == ["my-scores", "koniq"]
    assert os.path.basename(get_task("my-scores").task_file) == "my-scores.yaml"
