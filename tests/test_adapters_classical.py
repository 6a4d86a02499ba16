"""pyiqa metrics and BRISQUE as models: offline scores, direction, reference-based choices,
per-sample failures, and one-line errors for unknown metrics and missing weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.runner import RunConfig, run

torch.set_num_threads(1)


def photo(noise: float = 0.0, side: int = 128, seed: int = 0) -> Image.Image:
    """A real photograph (scikit-image's astronaut), shrunk, with optional Gaussian noise."""
    clean = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)), dtype=np.float64)
    noisy = clean + np.random.default_rng(seed).normal(0, noise, clean.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def score_samples(n: int) -> list[Sample]:
    return [Sample(id=f"s{i}", task="t", kind="score", images=("x.png",)) for i in range(n)]


def test_pyiqa_piqe_matches_pyiqa_and_keeps_its_direction():
    import pyiqa
    model = create_model("pyiqa:piqe", ModelConfig(device="cpu"))
    assert model.lower_better is True and model.kinds == {"score"}
    images = [[photo()], [photo(noise=40)]]
    clean, noisy = model.predict(score_samples(2), images)
    reference = pyiqa.create_metric("piqe", device=torch.device("cpu"))
    pixels = torch.from_numpy(np.asarray(images[0][0]) / 255.0).permute(2, 0, 1)[None].float()
    assert clean.score == pytest.approx(float(reference(pixels)), rel=1e-5)
    assert noisy.score > clean.score  # PIQE grows with distortion


def test_full_reference_metric_answers_comparisons():
    model = create_model("pyiqa:psnr", ModelConfig(device="cpu"))
    assert model.kinds == {"comparison"} and model.lower_better is False
    reference, slight, heavy = photo(), photo(noise=5, seed=1), photo(noise=40, seed=2)
    samples = [Sample(id=f"c{i}", task="t", kind="comparison", images=("r", "a", "b"))
               for i in range(3)]
    first, second, tie = model.predict(samples, [[reference, slight, heavy],
                                                 [reference, heavy, slight],
                                                 [reference, slight, slight]])
    assert (first.choice, second.choice, tie.choice) == ("Image A", "Image B", "Similar")
    assert first.extra["score_a"] > first.extra["score_b"]


def test_one_unusable_image_costs_one_sample():
    for name in ("pyiqa:piqe", "brisque"):
        model = create_model(name, ModelConfig(device="cpu"))
        good, tiny = model.predict(score_samples(2), [[photo()], [photo(side=4)]])
        assert good.ok and np.isfinite(good.score)
        assert tiny.status == "model_error" and tiny.error, name


@pytest.mark.parametrize("name, options, message", [
    ("pyiqa:no-such-metric", {}, "pyiqa has no metric 'no-such-metric'"),
    ("pyiqa:piqe", {"weights": "/nonexistent/weights.pth"}, "weights file not found"),
    ("pyiqa:piqe", {"weight": "x"}, "unknown --model-arg weight"),
    ("brisque", {"svm": "x"}, "unknown --model-arg svm"),
])
def test_bad_metric_names_and_options_are_model_errors(name, options, message):
    with pytest.raises(ModelError, match=message):
        create_model(name, ModelConfig(device="cpu", options=options))


def test_brisque_tracks_noise_and_runs_through_the_runner(tmp_path):
    model = create_model("brisque", ModelConfig())
    clean, noisy = model.predict(score_samples(2), [[photo()], [photo(noise=30)]])
    assert model.lower_better and noisy.score > clean.score
    result = run(RunConfig(model="brisque", tasks=["demo-score"], limit=3, batch_size=2,
                           output_dir=tmp_path, progress=False))
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").open()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["model_convention"]["lower_better"] is True
