"""`qbench data check`: files, counts, missing/unreadable/duplicate images and train/test overlap
on fixture folders with known faults."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from native_releases import build_koniq
from qbench.cli.main import main
from qbench.core.registry import get_task
from qbench.data.check import check_task


def build_faulty_kadid(root: Path) -> None:
    """DeQA KADID metas: test 0-7, train 6-11. Faults: test 0 missing, test 4 corrupt, test 2
    and 3 the same bytes, train 10 a copy of test 1, and 6, 7 listed in both splits."""
    images = root / "KADID10K" / "images"
    images.mkdir(parents=True)
    for i in range(12):
        Image.new("RGB", (6, 6), (i * 20, 3, 3)).save(images / f"{i:04d}.png")
    shutil.copy(images / "0002.png", images / "0003.png")
    shutil.copy(images / "0001.png", images / "0010.png")
    (images / "0004.png").write_bytes(b"\x89PNG truncated")
    (images / "0000.png").unlink()
    metas = root / "KADID10K" / "metas"
    metas.mkdir()
    for split, ids in (("test", range(0, 8)), ("train", range(6, 12))):
        records = [{"image": f"KADID10K/images/{i:04d}.png", "gt_score": 1 + i / 3,
                    "gt_score_norm": 1 + i / 3} for i in ids]
        (metas / f"{split}_kadid_{len(records)}.json").write_text(json.dumps(records))


def test_check_finds_every_planted_fault(tmp_path):
    build_faulty_kadid(tmp_path)
    check = check_task(get_task("kadid"), tmp_path, workers=2)
    assert not check.ok and check.error is None
    assert (check.samples, check.expected, check.images) == (8, 2000, 8)
    assert check.missing == ["images/0000.png"]
    assert len(check.unreadable) == 1
    assert check.unreadable[0].startswith(f"cannot decode {tmp_path / 'KADID10K/images/0004.png'}: ")
    assert check.duplicates == [["images/0002.png", "images/0003.png"]]
    assert sorted(check.overlap) == ["images/0001.png", "images/0006.png", "images/0007.png"]


def test_no_decode_skips_the_decoding_only(tmp_path):
    build_faulty_kadid(tmp_path)
    check = check_task(get_task("kadid"), tmp_path, decode=False, workers=1)
    assert check.unreadable == [] and check.missing == ["images/0000.png"]


def test_command_reports_per_task_and_fails_on_problems(tmp_path, capsys):
    build_faulty_kadid(tmp_path)
    code = main(["data", "check", "--tasks", "kadid,agiqa3k", "--data-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"kadid: PROBLEMS: {tmp_path / 'KADID10K'}"
    assert "  read: DeQA-Score meta KADID10K/metas/test_kadid_8.json" in lines
    assert "  split test: 8 samples (expected 2000), 8 image files" in lines
    assert "  PROBLEM: 8 samples in split 'test', expected 2000 (DeQA-Score meta " \
           "KADID10K/metas/test_kadid_8.json)" in lines
    assert "  missing images: 1: images/0000.png" in lines
    assert "  duplicate images (same content): 1 groups: images/0002.png = images/0003.png" in lines
    assert "  train/test overlap: 3 images: images/0001.png, images/0006.png, images/0007.png" in lines
    assert any(line.startswith("agiqa3k: NOT READY: agiqa3k: data.csv or metas/test_agiqa_*.json or "
                               "test_agiqa_*.json or metas/agi.json or agi.json not found in "
                               f"{tmp_path / 'agiqa3k'}") for line in lines)


def test_command_passes_on_a_clean_folder(tmp_path, capsys):
    assert main(["data", "check", "--tasks", "demo-score"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("demo-score: ok: ")
    assert "  split test: 420 samples (expected 420), 420 image files" in out
    assert "PROBLEM" not in out


def test_counts_and_dropped_rows_fail_the_check_and_say_why(tmp_path, capsys):
    build_koniq(tmp_path)
    assert main(["data", "check", "--tasks", "koniq", "--split", "test",
                 "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"koniq: PROBLEMS: {tmp_path / 'koniq'}"
    assert ("  PROBLEM: 11 samples in split 'test', expected 2015 (rows of "
            "koniq10k_distributions_sets.csv whose split is 'test')") in out
    assert "  PROBLEM: dropped 2 of 40 rows (5.0%, more than 1%): see the notes" in out
    assert "dropped 2 rows with a missing or outside 0..100 score" in out
    assert "  train/test overlap: 0 images" in out


def test_unknown_split_is_reported_not_raised(tmp_path, capsys):
    build_koniq(tmp_path)
    assert main(["data", "check", "--tasks", "agiqa3k", "--split", "train",
                 "--data-root", str(tmp_path)]) == 1
    assert capsys.readouterr().out.strip() == "agiqa3k: NOT READY: no split 'train' (has: test)"


def test_per_task_path_overrides_the_data_root(tmp_path, capsys):
    build_koniq(tmp_path / "elsewhere", folder="my-koniq-copy")
    (tmp_path / "empty").mkdir()
    code = main(["data", "check", "--tasks", "koniq", "--data-root", str(tmp_path / "empty"),
                 "--data", f"koniq={tmp_path / 'elsewhere' / 'my-koniq-copy'}", "--no-decode"])
    assert code == 1   # a fixture is not the published 2,010 images
    assert capsys.readouterr().out.startswith(
        f"koniq: PROBLEMS: {tmp_path / 'elsewhere' / 'my-koniq-copy'}\n")
