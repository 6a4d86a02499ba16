import json

import numpy as np
import pytest

from qbench.cli.main import main
from qbench.tasks import synthetic


def test_generator_is_deterministic_and_writes_dq_records(tmp_path):
    photo = [synthetic.bundled_photo(*synthetic.TEST_PHOTOS[0])]
    a = synthetic.generate(tmp_path / "a", photo, seed=3, crops_per_photo=1)
    b = synthetic.generate(tmp_path / "b", photo, seed=3, crops_per_photo=1)
    records = json.loads((a / "test.json").read_text())
    assert len(records) == 21  # one reference: undistorted + 4 distortions × 5 levels
    assert {r["severity"] for r in records if r["distortion_class"] == "null"} == {0}
    assert set(records[0]) == {"img_ref", "img_lq", "distortion_class", "distortion_name", "severity"}
    for r in records:
        assert (a / r["img_lq"]).read_bytes() == (b / r["img_lq"]).read_bytes()


def test_levels_are_ordered_in_severity():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    noise = [np.abs(synthetic.distort(image, "noise", k, np.random.default_rng(1)).astype(int) - image).mean()
             for k in range(1, 6)]
    dark = [synthetic.distort(image, "darken", k, rng).mean() for k in range(1, 6)]
    assert noise == sorted(noise) and dark == sorted(dark, reverse=True)


def test_fit_photos_are_disjoint_from_test_photos():
    assert not set(synthetic.FIT_PHOTOS) & set(synthetic.TEST_PHOTOS)
    assert all(synthetic.bundled_photo(*p).exists() for p in synthetic.FIT_PHOTOS + synthetic.TEST_PHOTOS)


@pytest.mark.slow
def test_default_run_is_the_demo_and_beats_chance(tmp_path, capsys):
    assert main(["run", "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "demo-degradation" in out and "demo-score" in out
    (metrics_file,) = tmp_path.glob("stats-*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    degradation, score = metrics["demo-degradation"], metrics["demo-score"]
    assert degradation["n"] == score["n"] == 420 and degradation["parsed_fraction"] == 1.0
    assert degradation["class_acc_mean"] > 0.5   # five classes: chance is 0.2
    assert degradation["level_acc_mean"] > 0.3   # five levels within the right class
    assert score["srcc"] > 0.6
    # a second identical run resumes: nothing is predicted again and metrics are unchanged
    assert main(["run", "--output", str(tmp_path), "--no-progress"]) == 0
    again = json.loads(metrics_file.read_text())
    assert again["demo-score"]["srcc"] == pytest.approx(score["srcc"])
