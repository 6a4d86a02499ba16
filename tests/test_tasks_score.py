"""The seven score benchmarks, each read from a small fixture in its native release format and
in the DeQA-Score meta format, run end to end with the `precomputed` model; the metrics are
checked against scipy computed here, independently of qbench.scoring.formulas."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import scipy.io
from PIL import Image
from scipy import stats

from qbench.core.registry import get_task
from qbench.run.runner import RunConfig, run
from qbench.tasks._formats import read_name_list
from realdata import AGIQA_LINES, KONIQ_QALIGN_EXCLUDED, KONIQ_SETS_HEADER, KONIQ_SETS_LINES

RNG_SEED = 7


def write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value % 256, value // 256 % 256, 90)).save(path)


def scores(n: int, low: float, high: float, seed: int = RNG_SEED) -> list[float]:
    return [round(float(v), 4) for v in np.random.default_rng(seed).uniform(low, high, n)]


# ------------------------------------------------------------------- native fixtures
# Each builder writes the release layout under `root/<folder>` and returns the ground truth a
# test split should yield: {image path relative to the task folder: raw score}, plus all rows.

def build_koniq(root: Path, n: int = 30, folder: str = "koniq") -> dict:
    """koniq10k_distributions_sets.csv as the authors publish it (real header, MOS on 0-100,
    LF line ends): the real excerpt lines, then rows of the same form. Test rows are named
    after images of Q-Align's list, plus the two excluded test images of the excerpt."""
    base = root / folder
    listed = [name for name in read_name_list("qalign_koniq_test.txt")
              if name not in {line.split(",")[0] for line in KONIQ_SETS_LINES}]
    mos = scores(n, 3.9, 88.4)
    sets = ["training"] * 18 + ["validation"] * 4 + ["test"] * (n - 22)
    names = [listed[i] if s == "test" else f"{1000 + i}.jpg" for i, s in enumerate(sets)]
    lines = [KONIQ_SETS_HEADER] + KONIQ_SETS_LINES
    for name, m, s in zip(names, mos, sets):
        lines.append(f"{name},0.0,0.1,0.3,0.5,0.1,100,{m},0.55,{s}")
    lines.append("bad_nan.jpg,0.0,0.1,0.3,0.5,0.1,100,,0.55,test")         # no MOS: dropped
    lines.append("bad_range.jpg,0.0,0.1,0.3,0.5,0.1,100,150.0,0.55,test")  # outside 0..100: dropped
    (base / "1024x768").mkdir(parents=True, exist_ok=True)
    (base / "koniq10k_distributions_sets.csv").write_text("\n".join(lines) + "\n")
    rows = [(line.split(",")[0], float(line.split(",")[7]), line.split(",")[-1])
            for line in KONIQ_SETS_LINES] + list(zip(names, mos, sets))
    for i, (name, _, _) in enumerate(rows):
        write_image(base / "1024x768" / name, i * 8)
    split_of = {"training": "train", "validation": "validation", "test": "test"}
    out: dict[str, dict[str, float]] = {"all": {}, "train": {}, "validation": {}, "test": {},
                                        "qalign-test": {}}
    for name, m, s in rows:
        key = f"1024x768/{name}"
        out["all"][key] = m
        out[split_of[s]][key] = m
        if s == "test" and name not in KONIQ_QALIGN_EXCLUDED:
            out["qalign-test"][key] = m
    return out


def build_spaq(root: Path, n: int = 20) -> dict:
    base = root / "spaq"
    mos = scores(n, 0.0, 100.0)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    listed = read_name_list("qalign_spaq_test.txt")
    names = [listed[i] if i % 2 else f"9{i:04d}.jpg" for i in range(n)]   # every other one listed
    for i, (name, m) in enumerate(zip(names, mos)):
        sheet.append([name, m, 50, 50, 50, 50, 50])
        write_image(base / "TestImage" / name, i * 9)
    (base / "Annotations").mkdir(parents=True)
    book.save(base / "Annotations" / "MOS and Image attribute scores.xlsx")
    return {"all": {f"TestImage/{name}": m for name, m in zip(names, mos)},
            "test": {f"TestImage/{name}": m for name, m in zip(names, mos) if name in listed}}


def build_kadid(root: Path, n: int = 25) -> dict:
    base = root / "kadid10k"   # the archive's own folder name
    mos = scores(n, 1.0, 4.93)
    lines = ["dist_img,ref_img,dmos,var"]
    listed = set(read_name_list("qalign_kadid_test.txt"))
    names = [f"I{64 + i // 5:02d}_{i % 5 + 1:02d}_01.png" for i in range(n)]   # I64..I68; test: I66-I81
    for i, (name, m) in enumerate(zip(names, mos)):
        lines.append(f"{name},{name[:3]}.png,{m},0.3")
        write_image(base / "images" / name, i * 7)
    (base / "dmos.csv").write_text("\n".join(lines) + "\n")
    return {"all": {f"images/{name}": m for name, m in zip(names, mos)},
            "test": {f"images/{name}": m for name, m in zip(names, mos) if name in listed}}


CSIQ_TYPES = (("noise", "awgn", "AWGN"), ("jpeg", "jpeg", "JPEG"), ("jpeg 2000", "jpeg2000", "jpeg2000"),
              ("blur", "blur", "BLUR"))


def build_csiq(root: Path, header_row: int = 4, sheet_name: str = "all_by_image") -> dict:
    base = root / "csiq"
    book = openpyxl.Workbook()
    book.active.title = "notes"
    sheet = book.create_sheet(sheet_name)
    for _ in range(header_row - 1):
        sheet.append(["CSIQ DMOS, all images"])
    sheet.append(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    dmos = scores(20, 0.0, 1.0)
    truth = {}
    for k, value in enumerate(dmos):
        image, (word, folder, spelled) = 1600 + k // 4, CSIQ_TYPES[k % 4]
        level = k % 5 + 1
        sheet.append([image, k % 4 + 1, word, level, 0.05, value])
        name = f"{image}.{spelled}.{level}.png"
        write_image(base / "dst_imgs" / folder / name, k * 11)
        truth[f"dst_imgs/{folder}/{name}"] = value
    base.mkdir(parents=True, exist_ok=True)
    book.save(base / "csiq.DMOS.xlsx")
    return {"test": truth}


def build_pipal(root: Path) -> dict:
    base = root / "PIPAL"
    truth = {}
    elo = iter(scores(24, 917.0, 1836.0))
    for ref in ("A0001", "A0002", "A0003"):
        lines = []
        for d in range(8):
            name, value = f"{ref}_{d // 4:02d}_{d % 4:02d}.bmp", next(elo)
            lines.append(f"{name},{value}")
            folder = f"Distortion_{d // 4 + 1}"
            write_image(base / folder / name, d * 13 + len(truth))
            truth[f"{folder}/{name}"] = value
        (base / "Train_Label").mkdir(parents=True, exist_ok=True)
        (base / "Train_Label" / f"{ref}.txt").write_text("\n".join(lines) + "\n")
    return {"all": truth}


def build_livew(root: Path, n: int = 20) -> dict:
    base = root / "livew"
    names = [f"{i}.bmp" for i in range(1, n + 1)]
    mos = scores(n, 3.0, 92.0)
    cells = np.empty((n, 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = np.array([name])
        folder = "Images/trainingImages" if i < 7 else "Images"
        write_image(base / folder / name, i * 12)
    (base / "Data").mkdir(parents=True)
    scipy.io.savemat(base / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
    scipy.io.savemat(base / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    path = lambda i: f"Images/trainingImages/{names[i]}" if i < 7 else f"Images/{names[i]}"  # noqa: E731
    return {"test": {path(i): m for i, m in enumerate(mos)},
            "without-training-images": {path(i): m for i, m in enumerate(mos) if i >= 7}}


def build_agiqa(root: Path, n: int = 20) -> dict:
    base = root / "AGIQA-3K"
    mos = scores(n, 0.0, 5.0)
    lines = list(AGIQA_LINES)   # the real header and first rows, CRLF as released
    truth = {line.split(",")[0]: float(line.split(",")[5]) for line in AGIQA_LINES[1:]}
    for i, m in enumerate(mos):
        lines.append(f"model_{i:03d}.jpg,a cat,,,realistic,{m},0.4,3.0,0.3")
        truth[f"model_{i:03d}.jpg"] = m
    for i, name in enumerate(truth):
        write_image(base / name, i * 10)
    (base / "data.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return {"test": truth}


def build_deqa(root: Path, dataset: str, meta: str, n: int = 20, lower_better: bool = False,
               flipped_raw: bool = False) -> dict:
    """`root/<dataset>/metas/<meta>` with image paths relative to root. `lower_better` writes
    raw DMOS (gt_score falls as gt_score_norm rises); `flipped_raw` writes it already flipped."""
    raw = scores(n, 0.0, 1.0 if lower_better else 100.0, seed=RNG_SEED + 1)
    low, high = min(raw), max(raw)
    records, truth = [], {}
    for i, value in enumerate(raw):
        norm = 4 * (value - low) / (high - low) + 1
        if lower_better:
            norm = 6 - norm
        gt = -value if flipped_raw else value
        image = f"{dataset}/images/{i:04d}.png"
        write_image(root / image, i * 9)
        records.append({"id": f"{i:04d}", "image": image, "gt_score": gt, "gt_score_norm": norm,
                        "std": 0.1, "std_norm": 0.1})
        truth[image] = (gt, norm)
    (root / dataset / "metas").mkdir(parents=True, exist_ok=True)
    (root / dataset / "metas" / meta).write_text(json.dumps(records))
    return truth


# ------------------------------------------------------------------- running

def predictions_for(truth: dict[str, float], tmp_path: Path, task: str, noise: float,
                    seed: int = 3) -> tuple[Path, dict[str, float]]:
    """A precomputed predictions CSV: ground truth plus noise, keyed by image path."""
    rng = np.random.default_rng(seed)
    pred = {image: value + float(rng.normal(0, noise)) for image, value in truth.items()}
    path = tmp_path / f"pred-{task}.csv"
    path.write_text("task,image,score\n" + "".join(f"{task},{k},{v}\n" for k, v in pred.items()))
    return path, pred


def run_one(tmp_path: Path, task: str, data_root: Path, predictions: Path, split: str | None = None,
            task_options: dict | None = None, **options) -> dict:
    result = run(RunConfig(model="precomputed", model_path=predictions, tasks=[task],
                           data_root=data_root, output_dir=tmp_path / "out", split=split,
                           model_options=options, progress=False, task_options=task_options or {}))
    (outcome,) = result.outcomes
    assert outcome.skipped is None, outcome.skipped
    return outcome.metrics


def assert_matches_scipy(metrics: dict, truth: dict[str, float], pred: dict[str, float],
                         lower_better: bool = False) -> None:
    keys = sorted(truth)
    gt = np.array([truth[k] for k in keys]) * (-1 if lower_better else 1)
    p = np.array([pred[k] for k in keys])
    assert metrics["n"] == len(keys) and metrics["n_ok"] == len(keys)
    assert metrics["parsed_fraction"] == 1.0
    assert metrics["plcc"] == pytest.approx(stats.pearsonr(p, gt)[0], abs=1e-9)
    assert metrics["srcc"] == pytest.approx(stats.spearmanr(p, gt)[0], abs=1e-9)
    assert metrics["krcc"] == pytest.approx(stats.kendalltau(p, gt)[0], abs=1e-9)
    assert metrics["plcc_logistic"] is not None and -1 <= metrics["plcc_logistic"] <= 1


NATIVE = [  # task, builder, split, lower_better, noise
    ("koniq", build_koniq, "test", False, 8.0),
    ("koniq", build_koniq, "qalign-test", False, 8.0),
    ("spaq", build_spaq, "all", False, 10.0),
    ("spaq", build_spaq, "test", False, 10.0),
    ("kadid", build_kadid, "all", False, 0.4),
    ("kadid", build_kadid, "test", False, 0.4),
    ("csiq", build_csiq, "test", True, 0.1),
    ("pipal", build_pipal, "all", False, 150.0),
    ("livew", build_livew, "test", False, 10.0),
    ("agiqa3k", build_agiqa, "test", False, 0.5),
]


@pytest.mark.parametrize("task,builder,split,lower_better,noise", NATIVE,
                         ids=[f"{n[0]}-{n[2]}" for n in NATIVE])
def test_native_release_end_to_end(tmp_path, task, builder, split, lower_better, noise):
    truth = builder(tmp_path / "data")[split]
    predictions, pred = predictions_for(truth, tmp_path, task, noise)
    metrics = run_one(tmp_path, task, tmp_path / "data", predictions, split=split,
                      task_options={"spaq": {"resize_short_side": None}} if task == "spaq" else None)
    assert metrics["split"] == split and metrics["source"].startswith("native release")
    assert_matches_scipy(metrics, truth, pred, lower_better)


def test_rescaling_is_over_the_whole_dataset_and_flipped_for_dmos(tmp_path):
    koniq = build_koniq(tmp_path)
    data = get_task("koniq").load(tmp_path / "koniq", "test")
    low, high = min(koniq["all"].values()), max(koniq["all"].values())
    assert data.mos_range == (0.0, 100.0) and high > 5   # the sets file's 0-100 scale, kept raw
    for s in data.samples:
        assert s.mos == koniq["test"][s.id]
        assert s.mos_norm == pytest.approx(4 * (s.mos - low) / (high - low) + 1)
    csiq = build_csiq(tmp_path)["test"]
    data = get_task("csiq").load(tmp_path / "csiq", "test")
    low, high = min(csiq.values()), max(csiq.values())
    best = min(data.samples, key=lambda s: s.mos)  # lowest DMOS is the best image
    assert best.mos_norm == pytest.approx(5.0) and best.mos == low
    assert max(data.samples, key=lambda s: s.mos).mos_norm == pytest.approx(1.0)


def test_nan_and_out_of_range_rows_are_dropped_and_counted(tmp_path):
    build_koniq(tmp_path)
    data = get_task("koniq").load(tmp_path / "koniq", "all")
    assert len(data.samples) == 30 + len(KONIQ_SETS_LINES)
    assert f"dropped 2 rows with a missing or outside 0..100 score in " \
           f"{tmp_path / 'koniq' / 'koniq10k_distributions_sets.csv'}" in data.notes
    assert (data.rows_read, data.rows_dropped) == (40, 2)
    assert data.problems() == ["38 samples in split 'all', expected 10073 (every row of "
                               "koniq10k_distributions_sets.csv)",
                               "dropped 2 of 40 rows (5.0%, more than 1%): see the notes"]


def test_koniq_official_sets_select_the_split(tmp_path):
    build_koniq(tmp_path)
    task = get_task("koniq")
    loaded = {split: task.load(tmp_path / "koniq", split)
              for split in ("train", "validation", "test", "all", "qalign-test")}
    assert {split: len(d.samples) for split, d in loaded.items()} == {
        "train": 23, "validation": 4, "test": 11, "all": 38, "qalign-test": 9}
    assert loaded["qalign-test"].split_source.startswith("the packaged list qalign_koniq_test.txt")
    assert not any(s.id.endswith(KONIQ_QALIGN_EXCLUDED) for s in loaded["qalign-test"].samples)
    assert task.default_split == "qalign-test"
    assert loaded["test"].expected_count == 2015 and loaded["qalign-test"].expected_count == 2010


def test_rmse_on_the_1_to_5_scale_for_models_answering_on_it(tmp_path):
    truth = build_koniq(tmp_path / "data")["test"]
    data = get_task("koniq").load(tmp_path / "data" / "koniq", "test")
    norm = {s.id: s.mos_norm for s in data.samples}
    predictions, pred = predictions_for(norm, tmp_path, "koniq", 0.3)
    metrics = run_one(tmp_path, "koniq", tmp_path / "data", predictions, split="test", mos_scale=True)
    keys = sorted(truth)
    expected = np.sqrt(np.mean([(pred[k] - norm[k]) ** 2 for k in keys]))
    assert metrics["rmse"] == pytest.approx(expected)
    assert_matches_scipy(metrics, truth, pred)


DEQA = [  # task, DeQA folder, meta file, lower_better
    ("koniq", "KONIQ", "test_koniq_2k.json", False),
    ("spaq", "SPAQ", "test_spaq_2k.json", False),
    ("kadid", "KADID10K", "test_kadid_2k.json", False),
    ("pipal", "PIPAL", "test_pipal_5k.json", False),
    ("livew", "LIVE-WILD", "test_livew_1k.json", False),
    ("agiqa3k", "AGIQA3K", "test_agiqa_3k.json", False),
    ("csiq", "CSIQ", "test_csiq_866.json", True),
]


@pytest.mark.parametrize("task,dataset,meta,lower_better", DEQA, ids=[d[0] for d in DEQA])
def test_deqa_layout_end_to_end(tmp_path, task, dataset, meta, lower_better):
    truth = build_deqa(tmp_path / "Data-DeQA-Score", dataset, meta, lower_better=lower_better)
    raw = {k: v[0] for k, v in truth.items()}
    predictions, pred = predictions_for({k: v[1] for k, v in truth.items()}, tmp_path, task, 0.4)
    metrics = run_one(tmp_path, task, tmp_path / "Data-DeQA-Score", predictions)
    assert metrics["source"] == f"DeQA-Score meta {dataset}/metas/{meta}"
    assert_matches_scipy(metrics, raw, pred, lower_better)
    split = get_task(task).default_split
    samples = get_task(task).load(tmp_path / "Data-DeQA-Score" / dataset, split).samples
    assert {s.id: s.mos_norm for s in samples} == {k: v[1] for k, v in truth.items()}


def test_deqa_meta_wins_over_native_files_for_the_published_split(tmp_path):
    build_koniq(tmp_path)
    records = [{"image": "koniq/1024x768/1000.jpg", "gt_score": 3.0, "gt_score_norm": 3.0},
               {"image": "koniq/1024x768/1001.jpg", "gt_score": 4.0, "gt_score_norm": 4.0}]
    (tmp_path / "koniq" / "metas").mkdir()
    (tmp_path / "koniq" / "metas" / "test_koniq_2k.json").write_text(json.dumps(records))
    task = get_task("koniq")
    published = task.load(tmp_path / "koniq", "qalign-test")
    assert [s.id for s in published.samples] == ["koniq/1024x768/1000.jpg", "koniq/1024x768/1001.jpg"]
    assert published.source == "DeQA-Score meta koniq/metas/test_koniq_2k.json"
    assert published.problems() == ["2 samples in split 'qalign-test', expected 2010 (DeQA-Score "
                                    "meta koniq/metas/test_koniq_2k.json)"]
    assert task.load(tmp_path / "koniq", "test").source.startswith("native release")
    assert task.load(tmp_path / "koniq", "all").source.startswith("native release")


def test_deqa_dmos_already_flipped_is_read_as_higher_better(tmp_path):
    truth = build_deqa(tmp_path, "CSIQ", "test_csiq_866.json", lower_better=True, flipped_raw=True)
    predictions, pred = predictions_for({k: v[1] for k, v in truth.items()}, tmp_path, "csiq", 0.4)
    metrics = run_one(tmp_path, "csiq", tmp_path, predictions)
    assert_matches_scipy(metrics, {k: v[0] for k, v in truth.items()}, pred, lower_better=False)
    assert metrics["srcc"] > 0.5
    assert any("higher-is-better in this file" in note for note in metrics["notes"])


def test_deqa_images_laid_out_elsewhere_are_found_by_file_name(tmp_path):
    """An archive of the same images in another layout (pyiqa's PIPAL: Dist_Imgs/ where the
    meta lists images/Distortion_1/): each image is found by its name, and the task says so."""
    build_deqa(tmp_path, "PIPAL", "test_pipal_5k.json", n=6)
    (tmp_path / "PIPAL" / "images").rename(tmp_path / "PIPAL" / "Dist_Imgs")
    data = get_task("pipal").load(tmp_path / "PIPAL", "test")
    assert all(Path(s.images[0]).is_file() and "Dist_Imgs" in s.images[0] for s in data.samples)
    assert any("6 images of test_pipal_5k.json found by file name" in n for n in data.notes)


def test_meta_without_gt_score_norm_is_rescaled_over_the_file(tmp_path):
    records = [{"image": f"SPAQ/images/{i}.png", "gt_score": value}
               for i, value in enumerate((20.0, 60.0, 40.0, 100.0))]
    (tmp_path / "SPAQ" / "metas").mkdir(parents=True)
    (tmp_path / "SPAQ" / "metas" / "test_spaq_2k.json").write_text(json.dumps(records))
    data = get_task("spaq").load(tmp_path / "SPAQ", "test")
    assert [s.mos_norm for s in data.samples] == pytest.approx([1.0, 3.0, 2.0, 5.0])
    assert any("rescaled over this file's min/max" in note for note in data.notes)


def test_csiq_file_names_from_sheet_words():
    from qbench.tasks.csiq import image_name
    assert image_name(1600, "noise", 1) == "1600.awgn.1.png"
    assert image_name(1600.0, "jpeg 2000", 3.0) == "1600.jpeg2000.3.png"
    assert image_name("boston", "f noise", 2) == "boston.fnoise.2.png"
