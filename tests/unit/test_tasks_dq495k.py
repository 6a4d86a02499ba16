"""DQ-495K meta records in the three accepted forms (JSON list, JSON lines, a folder of
per-image JSON files) and in folders written by the synthetic generator; Table-2 metrics
checked against counts made here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qbench import DataError
from qbench.core.registry import get_task
from qbench.run.runner import RunConfig, run
from qbench.tasks.synthetic import generate

CLASS_WORDS = ("noise", "blur", "JPEG", "compression", "darken")   # JPEG and compression: one class
CANONICAL = {"noise": "noise", "blur": "blur", "JPEG": "jpeg", "compression": "jpeg", "darken": "darken"}
LEVELS = ("slight", "moderate", "obvious", "serious", "catastrophic")


def dq_records(folder: Path, n: int = 40) -> list[dict]:
    records = []
    for i in range(n):
        word = CLASS_WORDS[i % 5] if i % 8 else "null"
        severity = 0 if word == "null" else i % 5 + 1
        image = f"lq/{i:03d}.png"
        path = folder / image
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (i, i, i)).save(path)
        records.append({"img_ref": f"ref/{i // 5}.png", "img_lq": image, "distortion_class": word,
                        "distortion_name": word, "severity": severity})
    return records


def write_form(folder: Path, records: list[dict], form: str) -> None:
    if form == "json":
        (folder / "test.json").write_text(json.dumps(records))
    elif form == "jsonl":
        (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        (folder / "metas" / "test").mkdir(parents=True)
        for i, record in enumerate(records):
            (folder / "metas" / "test" / f"{i:03d}.json").write_text(json.dumps(record))


@pytest.mark.parametrize("form", ["json", "jsonl", "folder"])
def test_each_meta_form_runs_end_to_end(tmp_path, form):
    folder = tmp_path / "data" / "dq495k"
    records = dq_records(folder)
    write_form(folder, records, form)
    rng = np.random.default_rng(4)
    rows, truth = [], {}
    for r in records:
        cls = CANONICAL.get(r["distortion_class"], "null")
        level = "null" if cls == "null" else LEVELS[r["severity"] - 1]
        guess_cls = cls if rng.random() < 0.8 else "blur"
        guess_level = level if rng.random() < 0.5 else "slight"
        guess_level = "null" if guess_cls == "null" else ("slight" if guess_level == "null" else guess_level)
        rows.append({"image": r["img_lq"], "distortion_class": guess_cls, "severity": guess_level})
        truth[r["img_lq"]] = (cls, level, guess_cls, guess_level)
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run(RunConfig(model="precomputed", model_path=predictions, tasks=["dq495k"],
                           data_root=tmp_path / "data", output_dir=tmp_path / "out", progress=False))
    metrics = result.outcomes[0].metrics
    assert metrics["n"] == 40 and metrics["parsed_fraction"] == 1.0
    for name in ("noise", "blur", "jpeg", "darken", "null"):
        rows_of = [t for t in truth.values() if t[0] == name]
        assert metrics["class_acc"][name] == pytest.approx(np.mean([t[2] == name for t in rows_of]))
        if name != "null":
            assert metrics["level_acc"][name] == pytest.approx(
                np.mean([t[2] == name and t[3] == t[1] for t in rows_of]))
    assert metrics["class_acc_mean"] == pytest.approx(np.mean(list(metrics["class_acc"].values())))


def test_jpeg_and_compression_are_one_class_and_severity_zero_is_null(tmp_path):
    records = dq_records(tmp_path)
    write_form(tmp_path, records, "json")
    samples = get_task("dq495k").load(tmp_path, "test").samples
    classes = {s.id: s.distortion_class for s in samples}
    assert classes["lq/002.png"] == classes["lq/003.png"] == "jpeg"
    null = next(s for s in samples if s.id == "lq/000.png")
    assert (null.distortion_class, null.severity) == ("null", "null")


def test_unusable_records_and_lines_are_dropped_and_counted(tmp_path):
    records = dq_records(tmp_path, 10)
    records[1]["distortion_class"] = "haze"     # not a protocol class
    records[2]["severity"] = 0                  # a distortion without a level
    del records[3]["img_lq"]
    text = "".join(json.dumps(r) + "\n" for r in records) + "{torn line\n"
    (tmp_path / "test.jsonl").write_text(text)
    data = get_task("dq495k").load(tmp_path, "test")
    assert len(data.samples) == 7
    meta = tmp_path / "test.jsonl"
    assert data.notes == [f"dropped 1 entries that are not JSON in {meta}",
                          f"dropped 3 meta records without a valid img_lq/distortion_class/severity "
                          f"in {meta}"]


@pytest.mark.parametrize("image", ["../outside.png", "/etc/passwd", "lq/../../outside.png"])
def test_image_paths_leaving_the_folder_are_refused(tmp_path, image):
    folder = tmp_path / "dq495k"
    records = dq_records(folder, 3)
    records[1]["img_lq"] = image
    write_form(folder, records, "json")
    with pytest.raises(DataError, match="leads outside the data root .*; refused"):
        get_task("dq495k").load(folder, "test")


def test_folder_from_the_synthetic_generator_is_accepted(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photo)
    generate(tmp_path / "mine", photos=[photo], crops_per_photo=1)
    data = get_task("dq495k").load(tmp_path / "mine", "test")
    assert len(data.samples) == 21 and not data.notes
    assert {s.distortion_class for s in data.samples} == {"noise", "blur", "jpeg", "darken", "null"}
    assert all(Path(s.images[0]).is_file() for s in data.samples)


def test_missing_meta_names_every_form_looked_for(tmp_path):
    with pytest.raises(DataError, match=r"none of test\.json, test\.jsonl, metas/test found in"):
        get_task("dq495k").load(tmp_path, "test")
