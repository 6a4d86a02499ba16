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
from qbench.core.registry import get_task
from qbench.run.runner import RunConfig, run

REG = ("SwinIR", "RealESRNet")
GEN = ("Real-ESRGAN", "BSRGAN", "StableSR")
GROUPS = ("x1", "x2", "x3")


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def build_sriqa(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Three groups in A-FINE's layout: the LR input `LRImages/x<k>_Original.png`, the HR
    original `images/Original/x<k>_Original.png` (the same file name) and the SR outputs. Every
    MOS file rates the original too: MOS/ with all five methods, MOS_Reg/ and MOS_Gen/ with their
    own. Group x2 holds a tie in MOS/. Returns {subset: {group: {image path relative to the
    folder: MOS}}}."""
    base = root / "sriqa"
    rng = np.random.default_rng(11)
    truth: dict[str, dict[str, dict[str, float]]] = {"MOS": {}, "MOS_Reg": {}, "MOS_Gen": {}}
    for g, group in enumerate(GROUPS):
        Image.new("RGB", (4, 4), (g * 50, 0, 0)).save(_mk(base / "LRImages" / f"{group}_Original.png"))
        Image.new("RGB", (16, 16), (g * 50, 250, 0)).save(
            _mk(base / "images" / "Original" / f"{group}_Original.png"))
        for subset, methods in (("MOS", REG + GEN), ("MOS_Reg", REG), ("MOS_Gen", GEN)):
            values = [round(float(v), 2) for v in rng.uniform(0, 100, len(methods) + 1)]
            if group == "x2" and subset == "MOS":
                values[1] = values[0]
            lines = []
            for method, value in zip(("Original",) + methods, values):
                name = f"{group}_Original.png" if method == "Original" else f"{group}_{method}x4.png"
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
    # C(6,2), C(3,2), C(4,2) pairs per group: the rated original is a candidate
    assert (metrics["acc_pairs"], metrics["reg_acc_pairs"], metrics["gen_acc_pairs"]) == (45, 9, 18)
    assert metrics["failure_counts"] == {"missing": 1}
    mos = {k: v for images in truth["MOS"].values() for k, v in images.items() if k in pred}
    keys = sorted(mos)
    p, g = [pred[k] for k in keys], [mos[k] for k in keys]
    assert metrics["plcc"] == pytest.approx(stats.pearsonr(p, g)[0])
    assert metrics["srcc"] == pytest.approx(stats.spearmanr(p, g)[0])


def test_score_mode_samples_point_at_the_release_images(tmp_path):
    build_sriqa(tmp_path)
    data = get_task("sriqa").load(tmp_path / "sriqa", "test")
    assert len(data.samples) == 18
    assert all(Path(s.images[0]).is_file() for s in data.samples)
    sample = next(s for s in data.samples if s.id == "x1/x1_SwinIRx4.png")
    assert set(sample.meta["mos_by_subset"]) == {"MOS", "MOS_Reg"}
    original = next(s for s in data.samples if s.id == "x1/x1_Original.png")
    assert Path(original.images[0]) == tmp_path / "sriqa" / "images" / "Original" / "x1_Original.png"
    sr_only = get_task("sriqa", {"include_original": False}).load(tmp_path / "sriqa", "test")
    assert len(sr_only.samples) == 15 and not any("Original" in s.id for s in sr_only.samples)


def test_comparison_mode_combines_both_orders(tmp_path):
    truth = build_sriqa(tmp_path)
    folder = tmp_path / "sriqa"
    samples = get_task("sriqa-compare").load(folder, "test").samples
    assert len(samples) == 2 * 3 * 15
    # the reference is the low-resolution input, never the HR original of the same file name
    assert all(Path(s.images[0]) == folder / "LRImages" / f"{s.group}_Original.png" for s in samples)
    assert any(Path(p).parent.name == "Original" for s in samples for p in s.images[1:])
    rng = np.random.default_rng(2)
    opinion = {image: v + float(rng.normal(0, 20))
               for images in truth["MOS"].values() for image, v in images.items()}
    rows, votes, first_answers = [], {}, {}
    for s in samples:
        a, b = (Path(p).relative_to(folder).as_posix() for p in s.images[1:])
        answer = "Image A" if opinion[a] > opinion[b] else "Image B"
        if rng.random() < 0.25:   # position bias: sometimes the second-order answer flips
            answer = "Image B" if answer == "Image A" else "Similar"
        rows.append(f"{s.id},{answer}")
        if s.meta["order"] == "AB":
            first_answers[(a, b)] = answer
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
        right = 0   # one order: the pair as the MOS file lists it, its answer alone
        for images in truth[subset].values():
            for a, b in combinations(images, 2):   # the file's order
                said = first_answers[(a, b)]
                right += sign({"Image A": 1, "Image B": -1, "Similar": 0}[said]) == sign(images[a] - images[b])
        assert metrics[f"{key}_one_order"] == pytest.approx(right / total), key
    agree = [v[0] == v[1] for v in votes.values()]
    assert metrics["order_agreement"] == pytest.approx(np.mean(agree))
    assert metrics["pairs_both_orders"] == 45
    assert 0 < metrics["order_agreement"] < 1


def test_sriqa_without_mos_folder_names_what_is_missing(tmp_path):
    (tmp_path / "sriqa" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no MOS/ folder .* in .*sriqa"):
        get_task("sriqa").load(tmp_path / "sriqa", "test")


def test_sriqa_score_lines_take_a_comma_or_a_space_and_nothing_else(tmp_path):
    build_sriqa(tmp_path)
    (tmp_path / "sriqa" / "MOS" / "x1.txt").write_text("x1_SwinIRx4.png 55.0\nx1_BSRGANx4.png,41\n")
    data = get_task("sriqa").load(tmp_path / "sriqa", "test")
    assert {s.id: s.mos for s in data.samples if s.group == "x1" and "MOS" in s.meta["mos_by_subset"]
            and s.meta["mos_by_subset"]["MOS"] in (55.0, 41.0)} == {
        "x1/x1_SwinIRx4.png": 55.0, "x1/x1_BSRGANx4.png": 41.0}
    (tmp_path / "sriqa" / "MOS" / "x1.txt").write_text("x1_SwinIRx4.png\n")
    with pytest.raises(DataError, match=r"x1\.txt:1: expected 'name,score'"):
        get_task("sriqa").load(tmp_path / "sriqa", "test")
