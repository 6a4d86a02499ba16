"""Every bad input to the benchmark readers gives one line naming the file and the cause, or a
counted, reported failure; never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import scipy.io

from helpers import TOY_PLUGIN
from native_releases import build_csiq, build_deqa, build_koniq, build_livew, build_pipal
from qbench import DataError, DataNotFound
from qbench.cli.main import main
from qbench.core.registry import get_task
from qbench.run.runner import RunConfig, run


def test_missing_data_root_names_the_files_and_the_folders(tmp_path):
    with pytest.raises(DataNotFound) as caught:
        get_task("koniq").locate(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("koniq: koniq10k_distributions_sets.csv or "
                              "koniq10k_scores_and_distributions.csv or metas/test_koniq_*.json or "
                              "test_koniq_*.json or metas/test_koniq.json or test_koniq.json or ")
    assert " not found in " in message
    assert str(tmp_path / "koniq") in message and str(tmp_path / "KONIQ") in message


def test_run_skips_a_task_without_data_and_says_where_it_looked(tmp_path, capsys):
    code = main(["run", "--model", "precomputed", "--model-path", str(tmp_path / "p.csv"),
                 "--tasks", "csiq", "--data-root", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2   # the predictions file is missing: one line, before any task
    assert f"--model-path {tmp_path / 'p.csv'}: no such file or folder" in err
    assert "Traceback" not in err
    (tmp_path / "p.csv").write_text("image,score\nx.png,1\n")
    code = main(["run", "--model", "precomputed", "--model-path", str(tmp_path / "p.csv"),
                 "--tasks", "csiq", "--data-root", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())   # undo the console's line wrapping
    assert code == 1
    assert f"skipped csiq: csiq: csiq.DMOS.xlsx or metas/test_csiq_*.json or test_csiq_*.json or " \
           f"metas/csiq.json or csiq.json not found in {tmp_path / 'csiq'}" in err


def test_list_marks_each_task_ready_or_not_found_with_its_path(tmp_path, capsys):
    build_koniq(tmp_path)
    assert main(["list", "--data-root", str(tmp_path)]) == 0
    rows: dict[str, list[str]] = {}
    for entry in capsys.readouterr().out.replace("\n    ", " ").splitlines():  # wrapped lines
        if entry.strip():
            rows.setdefault(entry.split()[0].rstrip(":"), []).append(entry)
    status, splits = rows["koniq"]
    assert f"ready: {tmp_path / 'koniq'}" in status and "default split qalign-test" in status
    assert "DeQA meta test_koniq_*.json > Q-Align test_koniq.json > " in splits
    assert "+ packaged list qalign_koniq_test.txt (deqa 2,010, qalign 2,010, native 2,010)" in splits
    assert rows["pipal"][1].endswith("DeQA meta test_pipal_*.json (no published count)")
    rows = {name: lines[0] for name, lines in rows.items()}
    assert "not found: Annotations/MOS and Image attribute scores.xlsx" in rows["spaq"]
    assert str(tmp_path / "spaq") in rows["spaq"]


def test_wrong_csv_columns_name_the_file_and_the_columns_found(tmp_path):
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text("image_name,score\n1.jpg,3\n")
    with pytest.raises(DataError, match=r"koniq10k_scores_and_distributions\.csv: missing column\(s\) "
                                        r"MOS; columns found: image_name, score$"):
        get_task("koniq").load(tmp_path, "all")


def test_malformed_csv_is_one_line(tmp_path):
    (tmp_path / "dmos.csv").write_text('dist_img,ref_img,dmos,var\na.png,r.png,3.0,0.1\n'
                                       'b.png,r.png,3.0,0.1,extra,fields\n')
    with pytest.raises(DataError, match=r"dmos\.csv: not a readable CSV: .*fields") as caught:
        get_task("kadid").load(tmp_path, "all")
    assert "\n" not in str(caught.value)


def test_wrong_sheet_names_the_sheets_found(tmp_path):
    build_csiq(tmp_path, sheet_name="dmos")
    with pytest.raises(DataError,
                       match=r"csiq\.DMOS\.xlsx: no sheet 'all_by_image'; sheets found: notes, dmos"):
        get_task("csiq").load(tmp_path / "csiq", "test")


def test_wrong_header_row_names_the_columns_found(tmp_path):
    build_csiq(tmp_path, header_row=1)   # header on row 1, not row 4
    with pytest.raises(DataError, match=r"csiq\.DMOS\.xlsx \(sheet 'all_by_image', header row 4\): "
                                        r"missing column\(s\) image, dst_type, dst_lev, dmos; "
                                        r"columns found: "):
        get_task("csiq").load(tmp_path / "csiq", "test")


def test_corrupt_xlsx_is_one_line(tmp_path):
    (tmp_path / "csiq.DMOS.xlsx").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"csiq\.DMOS\.xlsx: not a readable XLSX workbook"):
        get_task("csiq").load(tmp_path, "test")


def test_spaq_sheet_without_mos_column(tmp_path):
    book = openpyxl.Workbook()
    book.active.append(["Image name", "Quality"])
    (tmp_path / "Annotations").mkdir()
    book.save(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx")
    with pytest.raises(DataError, match="missing column\\(s\\) MOS; columns found: Image name, Quality"):
        get_task("spaq").load(tmp_path, "all")


def test_a_release_file_without_the_split_says_what_works(tmp_path):
    """KonIQ's scores file has no split column: the official splits need the sets file; the
    published test set (the packaged list) and the whole set still work."""
    folder = tmp_path / "koniq"
    folder.mkdir()
    (folder / "koniq10k_scores_and_distributions.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"
        "10007357496.jpg,0,3,45,47,1,96,3.496875,0.58,68.7285714286\n"
        "10004473376.jpg,0,0,24,70,7,105,3.8,0.53,77.38\n")
    with pytest.raises(DataError, match=r"koniq: koniq10k_scores_and_distributions\.csv has no split "
                                        r"column to define split 'test'; the splits that work with "
                                        r"it: qalign-test, all$"):
        get_task("koniq").load(folder, "test")
    data = get_task("koniq").load(folder, "qalign-test")
    assert [s.mos for s in data.samples] == [3.496875] and data.mos_range == (1.0, 5.0)
    build_pipal(tmp_path)
    with pytest.raises(DataError, match=r"pipal: split 'test' needs metas/test_pipal_\*\.json; "
                                        r"not found in .*PIPAL$"):
        get_task("pipal").load(tmp_path / "PIPAL", "test")


def test_corrupt_mat_and_missing_variable(tmp_path):
    build_livew(tmp_path)
    data = tmp_path / "livew" / "Data"
    scipy.io.savemat(data / "AllMOS_release.mat", {"mos": np.arange(3.0)})
    with pytest.raises(DataError,
                       match=r"AllMOS_release\.mat: no variable 'AllMOS_release'; variables found: mos"):
        get_task("livew").load(tmp_path / "livew", "test")
    (data / "AllImages_release.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"AllImages_release\.mat: not a readable MAT file"):
        get_task("livew").load(tmp_path / "livew", "test")


def test_mat_files_of_different_lengths(tmp_path):
    build_livew(tmp_path)
    scipy.io.savemat(tmp_path / "livew" / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.ones((1, 5))})
    with pytest.raises(DataError, match=r"20 image names but 5 scores"):
        get_task("livew").load(tmp_path / "livew", "test")


def test_pipal_label_line_without_score_and_empty_label_folder(tmp_path):
    build_pipal(tmp_path)
    labels = tmp_path / "PIPAL" / "Train_Label"
    (labels / "A0002.txt").write_text("A0002_00_00.bmp,1500\nA0002_00_01.bmp\n")
    with pytest.raises(DataError, match=r"A0002\.txt:2: expected 'name,score', got 'A0002_00_01\.bmp'"):
        get_task("pipal").load(tmp_path / "PIPAL", "all")
    for file in labels.glob("*.txt"):
        file.unlink()
    with pytest.raises(DataError, match=r"Train_Label: no label files"):
        get_task("pipal").load(tmp_path / "PIPAL", "all")


def test_pipal_non_numeric_score_is_dropped_and_counted(tmp_path):
    build_pipal(tmp_path)
    labels = tmp_path / "PIPAL" / "Train_Label"
    (labels / "A0003.txt").write_text("A0003_00_00.bmp,n/a\nA0003_00_01.bmp,1400\n")
    data = get_task("pipal").load(tmp_path / "PIPAL", "all")
    assert len(data.samples) == 17
    assert data.notes == [f"dropped 1 rows with a missing or non-finite score in {labels}"]


@pytest.mark.parametrize("image", ["../elsewhere/x.png", "/tmp/x.png", "KONIQ/../../x.png"])
def test_deqa_image_path_leaving_the_data_root_is_refused(tmp_path, image):
    build_deqa(tmp_path, "KONIQ", "test_koniq_2k.json", n=5)
    meta = tmp_path / "KONIQ" / "metas" / "test_koniq_2k.json"
    records = json.loads(meta.read_text())
    records[2]["image"] = image
    meta.write_text(json.dumps(records))
    with pytest.raises(DataError, match=f"test_koniq_2k.json: image path '{image}' leads outside "
                                        f"the data root .*; refused"):
        get_task("koniq").load(tmp_path / "KONIQ", "qalign-test")


def test_deqa_unreadable_json_and_unusable_records(tmp_path):
    build_deqa(tmp_path, "KADID10K", "test_kadid_2k.json", n=6)
    meta = tmp_path / "KADID10K" / "metas" / "test_kadid_2k.json"
    records = json.loads(meta.read_text())
    records[0]["gt_score"] = None
    records[1]["gt_score_norm"] = 9.0   # outside [1, 5]
    del records[2]["image"]
    meta.write_text(json.dumps(records))
    data = get_task("kadid").load(tmp_path / "KADID10K", "test")
    assert len(data.samples) == 3
    assert data.notes == ["dropped 3 of 6 records of test_kadid_2k.json: 1 without a numeric "
                          "'gt_score', 1 with a 'gt_score_norm' outside [1, 5], 1 without 'image'"]
    assert (data.rows_read, data.rows_dropped) == (6, 3)
    meta.write_text('[{"image": "x.png", ')
    with pytest.raises(DataError, match=r"test_kadid_2k\.json: not readable JSON"):
        get_task("kadid").load(tmp_path / "KADID10K", "test")
    meta.write_text('{"image": "x.png"}')
    with pytest.raises(DataError, match=r"expected a JSON list of records, got dict"):
        get_task("kadid").load(tmp_path / "KADID10K", "test")


def test_missing_and_corrupt_images_are_counted_and_listed_by_id(tmp_path):
    truth = build_koniq(tmp_path)["test"]
    missing, corrupt = sorted(truth)[:2]
    (tmp_path / "koniq" / missing).unlink()
    (tmp_path / "koniq" / corrupt).write_bytes(b"\xff\xd8 not really a jpeg")
    result = run(RunConfig(model="toy-luma", tasks=["koniq"], data_root=tmp_path, include=[TOY_PLUGIN],
                           output_dir=tmp_path / "out", progress=False, split="test"))
    metrics = result.outcomes[0].metrics
    assert metrics["n"] == len(truth) and metrics["n_ok"] == len(truth) - 2
    assert metrics["failure_counts"] == {"image_error": 2}
    assert sorted(metrics["failures"]["image_error"]) == [missing, corrupt]
    saved = json.loads((result.run_dir / "metrics.json").read_text())["koniq"]
    assert sorted(saved["failures"]["image_error"]) == [missing, corrupt]
    assert metrics["srcc"] is not None   # the run went on with the readable images


def test_native_table_names_leaving_the_folder_are_refused(tmp_path):
    build_koniq(tmp_path)
    csv = tmp_path / "koniq" / "koniq10k_distributions_sets.csv"
    csv.write_text(csv.read_text().replace("1003.jpg", "../../1003.jpg"))   # a training row
    with pytest.raises(DataError, match=r"koniq10k_distributions_sets\.csv: image path .*1003\.jpg' "
                                        r"leads outside the data root"):
        get_task("koniq").load(tmp_path / "koniq", "test")


def test_sriqa_score_file_names_leaving_the_folder_are_refused(tmp_path):
    (tmp_path / "MOS").mkdir()
    (tmp_path / "MOS" / "x1.txt").write_text("../../secret.png,50\nx1_SwinIRx4.png,40\n")
    with pytest.raises(DataError, match=r"image path '\.\./\.\./secret\.png' leads outside"):
        get_task("sriqa").load(tmp_path, "test")


def test_symlinked_image_folder_inside_the_layout_is_accepted(tmp_path):
    truth = build_deqa(tmp_path / "elsewhere", "KONIQ", "test_koniq_2k.json", n=4)
    root = tmp_path / "root"
    (root / "KONIQ").mkdir(parents=True)
    (root / "KONIQ" / "metas").symlink_to(tmp_path / "elsewhere" / "KONIQ" / "metas")
    (root / "KONIQ" / "images").symlink_to(tmp_path / "elsewhere" / "KONIQ" / "images")
    samples = get_task("koniq").load(root / "KONIQ", "qalign-test").samples
    assert sorted(s.id for s in samples) == sorted(truth)
    assert all(Path(s.images[0]).is_file() for s in samples)


def test_whole_set_split_of_a_deqa_only_folder_names_the_native_file(tmp_path):
    build_deqa(tmp_path, "KADID10K", "test_kadid_2k.json", n=4)
    with pytest.raises(DataError, match=r"kadid: split 'all' needs dmos\.csv; not found in .*KADID10K$"):
        get_task("kadid").load(tmp_path / "KADID10K", "all")
    with pytest.raises(DataError, match=r"split 'train' needs metas/train_kadid_\*\.json; not found"):
        get_task("kadid").load(tmp_path / "KADID10K", "train")


def test_a_deqa_meta_beside_the_images_marks_the_folder(tmp_path):
    """REFERENCE §2 lists SPAQ's meta at the dataset folder's top level (SPAQ/test_spaq_2k.json)."""
    folder = tmp_path / "SPAQ"
    folder.mkdir()
    (folder / "test_spaq_2k.json").write_text("[]")
    assert get_task("spaq").locate(tmp_path) == folder
    (folder / "test_spaq_2k.json").unlink()
    with pytest.raises(DataNotFound):
        get_task("spaq").locate(tmp_path)
