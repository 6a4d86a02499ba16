"""The readers on the files users actually download: the real release files and Q-Align's test
JSONs (../shared/realdata, whole files where present, verbatim excerpts always), repeated images,
and the loud paths: `data check` and `run` say when the measured split is not the published one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from qbench import ModelError
from qbench.cli.main import main
from qbench.core.model import ModelConfig
from qbench.core.registry import create_model, get_task
from qbench.tasks._formats import read_name_list
from realdata import (
    AGIQA_LINES,
    KONIQ_QALIGN_EXCLUDED,
    KONIQ_SETS_HEADER,
    KONIQ_SETS_LINES,
    QALIGN_RECORDS,
    realdata,
)

# ------------------------------------------------------------------- the whole real files

PUBLISHED_KONIQ = {"qalign-test": 2010, "test": 2015, "train": 7058, "validation": 1000,
                   "all": 10073}


def koniq_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "koniq"
    folder.mkdir()
    shutil.copy(realdata("koniq10k_distributions_sets.csv"), folder)
    return folder


@pytest.mark.slow
def test_real_koniq_sets_file_gives_the_published_splits(tmp_path):
    folder = koniq_folder(tmp_path)
    task = get_task("koniq")
    for split, count in PUBLISHED_KONIQ.items():
        data = task.load(folder, split)
        assert len(data.samples) == count == data.expected_count, split
        assert data.problems() == [] and data.rows_dropped == 0
        assert data.mos_range == (0.0, 100.0)
        assert 3.9 < min(s.mos for s in data.samples) and max(s.mos for s in data.samples) < 88.4
    qalign = {Path(s.id).name for s in task.load(folder, "qalign-test").samples}
    official = {Path(s.id).name for s in task.load(folder, "test").samples}
    assert official - qalign == set(KONIQ_QALIGN_EXCLUDED) and qalign < official


def test_real_koniq_run_reports_scipy_srcc_on_the_same_rows_and_exits_0(tmp_path, capsys):
    """The defect this guards against: the real sets file read as one sample, exit 0."""
    folder = koniq_folder(tmp_path)
    rows = [line.split(",") for line in folder.joinpath(
        "koniq10k_distributions_sets.csv").read_text().splitlines()[1:]]
    listed = set(read_name_list("qalign_koniq_test.txt"))
    rng = np.random.default_rng(0)
    truth = {name: float(mos) for name, *_, mos, _sd, split in rows if name in listed}
    pred = {name: mos / 20 + float(rng.normal(0, 0.4)) for name, mos in truth.items()}
    predictions = tmp_path / "pred.csv"
    predictions.write_text("image,score\n" + "".join(f"{k},{v}\n" for k, v in pred.items()))
    code = main(["run", "--model", "precomputed", "--model-path", str(predictions), "--tasks",
                 "koniq", "--data-root", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "differs from the expected split" not in err
    run = next((tmp_path / "out").glob("precomputed-*"))
    metrics = json.loads((run / "metrics.json").read_text())["koniq"]
    keys = sorted(truth)
    assert metrics["n"] == 2010 and metrics["n_ok"] == 2010
    assert metrics["srcc"] == pytest.approx(stats.spearmanr([pred[k] for k in keys],
                                                            [truth[k] for k in keys])[0], abs=1e-12)
    manifest = json.loads((run / "manifest.json").read_text())["tasks"]["koniq"]
    assert manifest["split"] == "qalign-test" and manifest["expected_count"] == 2010
    assert manifest["split_source"].startswith("the packaged list qalign_koniq_test.txt")


QALIGN_FILES = [  # file, task, split, published count
    ("test_koniq.json", "koniq", "qalign-test", 2010),
    ("test_spaq.json", "spaq", "test", 2224),
    ("test_kadid.json", "kadid", "test", 2000),
    ("csiq.json", "csiq", "qalign-750", 750),
    ("livec.json", "livew", "test", 1169),
    ("agi.json", "agiqa3k", "test", 2982),
]


@pytest.mark.parametrize("file,task,split,count", QALIGN_FILES, ids=[f[0] for f in QALIGN_FILES])
def test_real_qalign_test_jsons_read_as_published(tmp_path, file, task, split, count):
    folder = tmp_path / task / "metas"
    folder.mkdir(parents=True)
    shutil.copy(realdata(file), folder / file)
    data = get_task(task).load(folder.parent, split)
    assert len(data.samples) == count == data.expected_count
    assert data.problems() == [] and data.rows_dropped == 0
    assert data.source == data.split_source == f"Q-Align test JSON {task}/metas/{file}"
    records = json.loads((folder / file).read_text())
    first = records[0]
    expected = float(first["gt_score"]) if "gt_score" in first else float(first["id"].split("->")[1])
    assert data.samples[0].mos == expected


LISTED = [f for f in QALIGN_FILES if get_task(f[1]).split_specs[f[2]].names]


@pytest.mark.parametrize("file,task,split,count", LISTED, ids=[f[0] for f in LISTED])
def test_packaged_lists_are_the_published_test_jsons(file, task, split, count):
    listed = read_name_list(get_task(task).split_specs[split].names)
    records = json.loads(realdata(file).read_text())
    assert listed == ["/".join(r["image"].split("/")[1:]) for r in records] and len(listed) == count


def test_real_agiqa_data_csv_with_crlf_is_the_whole_set(tmp_path):
    folder = tmp_path / "AGIQA-3K"
    folder.mkdir()
    shutil.copy(realdata("agiqa3k_data.csv"), folder / "data.csv")
    assert b"\r\n" in (folder / "data.csv").read_bytes()[:200]
    data = get_task("agiqa3k").load(folder, "test")
    assert len(data.samples) == 2982 and data.problems() == []
    assert data.samples[0].mos == pytest.approx(0.965602553)
    assert not any(s.id.endswith("\r") for s in data.samples)


# ------------------------------------------------------------------- excerpts, always run

def write_image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 10, 10)).save(path)


def test_qalign_excerpts_find_their_images_in_the_release_folders(tmp_path):
    """Q-Align lists `koniq/<name>.jpg`, `livec/t1.bmp`, `kadid10k/...`: the images are found
    in the release's own folders by name, and each record's score read its own way."""
    layout = {"koniq": ("test_koniq.json", "1024x768", "qalign-test"),
              "kadid10k": ("test_kadid.json", "images", "test"),
              "ChallengeDB_release": ("livec.json", "Images/trainingImages", "test"),
              "AGIQA-3K": ("agi.json", "", "test")}
    tasks = {"koniq": "koniq", "kadid10k": "kadid", "ChallengeDB_release": "livew",
             "AGIQA-3K": "agiqa3k"}
    for folder, (file, images, split) in layout.items():
        records = QALIGN_RECORDS[file]
        for record in records:
            write_image(tmp_path / folder / images / Path(record.get("image") or record["img_path"]).name)
        (tmp_path / folder / file).write_text(json.dumps(records))
        data = get_task(tasks[folder]).load(tmp_path / folder, split)
        assert [Path(s.images[0]).parent for s in data.samples] == [tmp_path / folder / images] * 2
        assert all(Path(s.images[0]).is_file() for s in data.samples)
        assert data.source == f"Q-Align test JSON {folder}/{file}"
    kadid = get_task("kadid").load(tmp_path / "kadid10k", "test")
    assert [s.mos for s in kadid.samples] == [4.63, 4.48]
    agi = get_task("agiqa3k").load(tmp_path / "AGIQA-3K", "test")
    assert [s.mos for s in agi.samples] == [0.965602553, 1.361853219]


def test_unusable_qalign_records_say_which_key_was_missing(tmp_path):
    records = json.loads(json.dumps(QALIGN_RECORDS["livec.json"] + QALIGN_RECORDS["test_kadid.json"]))
    records.append({"gt_score": 50.0})                   # no image key at all
    records.append({"img_path": "livec/9.bmp"})          # no score anywhere
    records.append({"img_path": "livec/8.bmp", "gt_score": "n/a"})
    records[2]["id"] = "I66_01_01.png"                   # KADID-style, the '->score' lost
    (tmp_path / "livew").mkdir()
    (tmp_path / "livew" / "livec.json").write_text(json.dumps(records))
    data = get_task("livew").load(tmp_path / "livew", "test")
    assert len(data.samples) == 3
    assert data.notes[0] == ("dropped 4 of 7 records of livec.json: 3 without a numeric "
                             "'gt_score' (or a score after '->' in 'id'), 1 without 'image' or "
                             "'img_path'")
    assert data.rows_read == 7 and data.rows_dropped == 4
    assert "dropped 4 of 7 rows (57.1%, more than 1%): see the notes" in data.problems()


def test_koniq_sets_excerpt_keeps_its_scale_and_splits(tmp_path):
    folder = tmp_path / "koniq"
    folder.mkdir()
    (folder / "koniq10k_distributions_sets.csv").write_text(
        "\n".join([KONIQ_SETS_HEADER, *KONIQ_SETS_LINES]) + "\n")
    task = get_task("koniq")
    test = task.load(folder, "test")
    assert sorted(Path(s.id).name for s in test.samples) == ["10007357496.jpg", "121123359.jpg",
                                                            "213906996.jpg"]
    assert [Path(s.id).name for s in task.load(folder, "qalign-test").samples] == ["10007357496.jpg"]
    assert max(s.mos for s in task.load(folder, "all").samples) == pytest.approx(88.24375)
    # both release files in one folder: the one with the official split column is read
    (folder / "koniq10k_scores_and_distributions.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n1.jpg,0,0,0,1,0,1,4.0,0.5,75.0\n")
    assert task.load(folder, "test").source == "native release koniq10k_distributions_sets.csv"
    assert AGIQA_LINES[0].startswith("name,prompt")


# ------------------------------------------------------------------- repeated images

def build_meta_with_repeats(root: Path) -> Path:
    records = [{"image": f"KADID10K/images/{i}.png", "gt_score": 1 + i / 4, "gt_score_norm": 1 + i / 4}
               for i in range(12)]
    records.append(dict(records[3]))                                  # same score twice
    records.append(dict(records[5], gt_score=4.9, gt_score_norm=4.9))  # another score
    for i in range(12):
        write_image(root / "KADID10K" / "images" / f"{i}.png", i * 20)
    (root / "KADID10K" / "metas").mkdir(parents=True)
    meta = root / "KADID10K" / "metas" / "test_kadid_2k.json"
    meta.write_text(json.dumps(records))
    return meta


def test_repeated_images_fail_the_check_and_keep_the_first_row_in_a_run(tmp_path, capsys):
    build_meta_with_repeats(tmp_path)
    data = get_task("kadid").load(tmp_path / "KADID10K", "test")
    assert len(data.samples) == 12 and data.repeated == 2
    assert {s.id: s.mos for s in data.samples}["KADID10K/images/5.png"] == 1 + 5 / 4   # the first
    note = next(n for n in data.notes if "listed more than once" in n)
    assert note.startswith("2 images listed more than once in test_kadid_2k.json (1 with different "
                           "scores); kept the first row of each: 3.png (1.75, 1.75); 5.png (2.25, 4.9)")
    assert main(["data", "check", "--tasks", "kadid", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "  PROBLEM: 2 images listed more than once (one row kept for each; see the notes)" in out
    predictions = tmp_path / "pred.csv"
    predictions.write_text("image,score\n" + "".join(f"{i}.png,{i}\n" for i in range(12)))
    code = main(["run", "--model", "precomputed", "--model-path", str(predictions), "--tasks",
                 "kadid", "--data-root", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 3
    assert "kadid: note: 2 images listed more than once in test_kadid_2k.json" in err
    assert "kadid: differs from the expected split: 2 images listed more than once" in err
    assert "kadid: differs from the expected split: 12 samples in split 'test', expected 2000" in err


def test_precomputed_refuses_two_answers_for_one_image(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("task,image,score\nkoniq,a.jpg,3.0\nkoniq,a.jpg,3.0\nspaq,a.jpg,1.0\n")
    create_model("precomputed", ModelConfig(model_path=path))   # a repeat with the same answer
    path.write_text("task,image,score\nkoniq,a.jpg,3.0\nkoniq,b.jpg,2.0\nkoniq,a.jpg,4.5\n")
    with pytest.raises(ModelError, match=r"gives a\.jpg two different answers for task koniq: "
                                         r"3\.0 and 4\.5; keep one row per image$"):
        create_model("precomputed", ModelConfig(model_path=path))


@pytest.mark.slow
def test_train_check_reads_the_7058_training_images_of_the_real_sets_file(tmp_path, capsys):
    """`qbench train --check` on the released sets file: KonIQ's 7,058 training images, no
    problem reported (the defect: 3 images, "config and data ok")."""
    import yaml
    folder = koniq_folder(tmp_path)
    rows = [line.split(",") for line in
            (folder / "koniq10k_distributions_sets.csv").read_text().splitlines()[1:]]
    images = folder / "1024x768"
    images.mkdir()
    tiny = Image.new("RGB", (4, 4), (90, 90, 90))
    for name, *_, split in rows:
        if split == "training":
            tiny.save(images / name, format="JPEG")
    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text("{}")   # --check loads no weights
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(model)}, "output_dir": str(tmp_path / "o"),
                                      "data": {"score": [{"folder": str(folder)}]}}))
    assert main(["train", "--config", str(config), "--check"]) == 0
    printed = " ".join(capsys.readouterr().err.split())
    assert "config and data ok: 7058 samples (7058 score)" in printed
    assert "differs" not in printed
