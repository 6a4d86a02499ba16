"""The seven score benchmarks, each read from a small fixture in its native release format and
in the DeQA-Score meta format, run end to end with the `precomputed` model; the metrics are
checked against scipy computed here, independently of qbench.scoring.formulas."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from native_releases import (
    build_agiqa,
    build_csiq,
    build_deqa,
    build_kadid,
    build_koniq,
    build_livew,
    build_pipal,
    build_spaq,
)
from qbench.core.registry import get_task
from qbench.run.runner import RunConfig, run
from realdata import KONIQ_QALIGN_EXCLUDED, KONIQ_SETS_LINES

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
