"""SRIQA-Bench from a small fixture in its release layout: score mode (pairwise accuracy inside
groups, Reg-Acc / Gen-Acc / Acc, PLCC/SRCC) and comparison mode (both orders combined, order
agreement), with expectations computed here pair by pair."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from qbench import DataError
from qbench.registry import get_task
from qbench.runner import RunConfig, run

REG = ("SwinIR", "RealESRNet")
GEN = ("Real-ESRGAN", "BSRGAN", "StableSR")
GROUPS = ("x1", "x2", "x3")


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def build_sriqa(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Three groups; MOS/ rates all five methods, MOS_Reg/ and MOS_Gen/ their own. Group x2
    holds a tie in MOS/. Returns {subset: {group: {image path relative to the folder: MOS}}}."""
    base = root / "sriqa"
    rng = np.random.default_rng(11)
    truth: dict[str, dict[str, dict[str, float]]] = {"MOS": {}, "MOS_Reg": {}, "MOS_Gen": {}}
    for g, group in enumerate(GROUPS):
        Image.new("RGB", (4, 4), (g * 50, 0, 0)).save(_mk(base / "LRImages" / f"{group}_Original.png"))
        for subset, methods in (("MOS", REG + GEN), ("MOS_Reg", REG), ("MOS_Gen", GEN)):
            values = [round(float(v), 2) for v in rng.uniform(0, 100, len(methods))]
            if group == "x2" and subset == "MOS":
                values[1] = values[0]
            lines = []
            for method, value in zip(methods, values):
                name = f"{group}_{method}x4.png"
                lines.append(f"{name},{value}")
                truth[subset].setdefault(group, {})[f"images/{method}/{name}"] = value
            (_mk(base / subset / f"{group}.txt")).write_text("\n".join(lines) + "\n")
        for m, method in enumerate(REG + GEN):
            Image.new("RGB", (16, 16), (g * 50, m * 40, 9)).save(
                _mk(base / "images" / method / f"{group}_{method}x4.png"))
    return truth


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def expected_pair_accuracy(truth: dict[str, dict[str, float]], pred: dict[str, float]) -> float:
    right = total = 0
    for images in truth.values():
        for a, b in combinations(sorted(images), 2):
            total += 1
            if a in pred and b in pred:
                right += sign(images[a] - images[b]) == sign(pred[a] - pred[b])
    return right / total


def run_sriqa(tmp_path: Path, task: str, predictions: Path) -> dict:
    result = run(RunConfig(model="precomputed", model_path=predictions, tasks=[task],
                           data_root=tmp_path, output_dir=tmp_path / "out", progress=False))
    (outcome,) = result.outcomes
    assert outcome.skipped is None, outcome.skipped
    return outcome.metrics


def test_score_mode_pairwise_accuracies_and_correlations(tmp_path):
    truth = build_sriqa(tmp_path)
    rng = np.random.default_rng(5)
    pred = {image: value + float(rng.normal(0, 15))
            for images in truth["MOS"].values() for image, value in images.items()}
    pred["images/SwinIR/x3_SwinIRx4.png"] = pred["images/RealESRNet/x3_RealESRNetx4.png"]  # a tie
    unanswered = "images/BSRGAN/x1_BSRGANx4.png"   # no row: its pairs count as wrong
    del pred[unanswered]
    path = tmp_path / "pred.csv"
    path.write_text("image,score\n" + "".join(f"{k},{v}\n" for k, v in pred.items()))
    metrics = run_sriqa(tmp_path, "sriqa", path)
    assert metrics["acc"] == pytest.approx(expected_pair_accuracy(truth["MOS"], pred))
    assert metrics["reg_acc"] == pytest.approx(expected_pair_accuracy(truth["MOS_Reg"], pred))
    assert metrics["gen_acc"] == pytest.approx(expected_pair_accuracy(truth["MOS_Gen"], pred))
    assert (metrics["acc_pairs"], metrics["reg_acc_pairs"], metrics["gen_acc_pairs"]) == (30, 3, 9)
    assert metrics["failure_counts"] == {"missing": 1}
    mos = {k: v for images in truth["MOS"].values() for k, v in images.items() if k in pred}
    keys = sorted(mos)
    p, g = [pred[k] for k in keys], [mos[k] for k in keys]
    assert metrics["plcc"] == pytest.approx(stats.pearsonr(p, g)[0])
    assert metrics["srcc"] == pytest.approx(stats.spearmanr(p, g)[0])


def test_score_mode_samples_point_at_the_release_images(tmp_path):
    build_sriqa(tmp_path)
    data = get_task("sriqa").load(tmp_path / "sriqa", "test")
    assert len(data.samples) == 15
    assert all(Path(s.images[0]).is_file() for s in data.samples)
    sample = next(s for s in data.samples if s.id == "x1/x1_SwinIRx4.png")
    assert set(sample.meta["mos_by_subset"]) == {"MOS", "MOS_Reg"}


def test_comparison_mode_combines_both_orders(tmp_path):
    truth = build_sriqa(tmp_path)
    folder = tmp_path / "sriqa"
    samples = get_task("sriqa-compare").load(folder, "test").samples
    assert len(samples) == 2 * 3 * 10
    assert all(Path(s.images[0]).name == f"{s.group}_Original.png" for s in samples)
    rng = np.random.default_rng(2)
    opinion = {image: v + float(rng.normal(0, 20))
               for images in truth["MOS"].values() for image, v in images.items()}
    rows, votes = [], {}
    for s in samples:
        a, b = (Path(p).relative_to(folder).as_posix() for p in s.images[1:])
        answer = "Image A" if opinion[a] > opinion[b] else "Image B"
        if rng.random() < 0.25:   # position bias: sometimes the second-order answer flips
            answer = "Image B" if answer == "Image A" else "Similar"
        rows.append(f"{s.id},{answer}")
        first, second = sorted((a, b))
        vote = {"Image A": 1, "Image B": -1, "Similar": 0}[answer] * (1 if a == first else -1)
        votes.setdefault((first, second), []).append(vote)
    path = tmp_path / "pred.csv"
    path.write_text("image,choice\n" + "\n".join(rows) + "\n")
    metrics = run_sriqa(tmp_path, "sriqa-compare", path)

    for key, subset in (("acc", "MOS"), ("reg_acc", "MOS_Reg"), ("gen_acc", "MOS_Gen")):
        right = total = 0
        for images in truth[subset].values():
            for first, second in combinations(sorted(images), 2):
                total += 1
                right += sign(sum(votes[(first, second)])) == sign(images[first] - images[second])
        assert metrics[key] == pytest.approx(right / total), key
    agree = [v[0] == v[1] for v in votes.values()]
    assert metrics["order_agreement"] == pytest.approx(np.mean(agree))
    assert metrics["pairs_both_orders"] == 30
    assert 0 < metrics["order_agreement"] < 1


def test_sriqa_without_mos_folder_names_what_is_missing(tmp_path):
    (tmp_path / "sriqa" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no MOS/ folder .* in .*sriqa"):
        get_task("sriqa").load(tmp_path / "sriqa", "test")


def test_sriqa_score_line_without_comma_is_one_line_error(tmp_path):
    build_sriqa(tmp_path)
    (tmp_path / "sriqa" / "MOS" / "x1.txt").write_text("x1_SwinIRx4.png 55.0\n")
    with pytest.raises(DataError, match=r"x1\.txt:1: expected 'name,score'"):
        get_task("sriqa").load(tmp_path / "sriqa", "test")
