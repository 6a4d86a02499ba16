"""pyiqa metrics and BRISQUE as models: offline scores, direction, reference-based choices,
per-sample failures, and one-line errors for unknown metrics and missing weights."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.run.runner import RunConfig, run

torch.set_num_threads(1)


def photo(noise: float = 0.0, side: int = 128, seed: int = 0) -> Image.Image:
    """A real photograph (scikit-image's astronaut), shrunk, with optional Gaussian noise."""
    clean = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)), dtype=np.float64)
    noisy = clean + np.random.default_rng(seed).normal(0, noise, clean.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def score_samples(n: int) -> list[Sample]:
    return [Sample(id=f"s{i}", task="t", kind="score", images=("x.png",)) for i in range(n)]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------------------------------------------ replicas

def children_of(pid: int) -> set[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return set(map(int, open(path).read().split())) if os.path.exists(path) else set()


@pytest.mark.parametrize("name", ["pyiqa:piqe", "brisque"])
def test_replicas_in_worker_processes_answer_as_one_process_does(name):
    images = [[photo(noise=n, seed=i)] for i, n in enumerate((0, 10, 40, 0))] + [[photo(side=4)]]
    alone = create_model(name, ModelConfig(device="cpu"))
    assert alone.replicas is None
    expected = alone.predict(score_samples(5), images)
    model = create_model(name, ModelConfig(device="cpu", workers=2))
    try:
        assert model.replicas.count == 2 and len(children_of(os.getpid())) >= 2
        got = model.predict(score_samples(5), images)
    finally:
        model.close()
    assert [p.sample_id for p in got] == [f"s{i}" for i in range(5)]
    assert [p.score for p in got[:4]] == [p.score for p in expected[:4]]   # bit for bit
    assert got[4].status == "model_error" and got[4].error == expected[4].error
    assert all(p.latency_s > 0 for p in got)
    assert model.replicas is None


def test_full_reference_metric_answers_from_replicas():
    model = create_model("pyiqa:psnr", ModelConfig(device="cpu", workers=2))
    reference, slight, heavy = photo(), photo(noise=5, seed=1), photo(noise=40, seed=2)
    samples = [Sample(id=f"c{i}", task="t", kind="comparison", images=("r", "a", "b"))
               for i in range(2)]
    try:
        first, second = model.predict(samples, [[reference, slight, heavy],
                                                [reference, heavy, slight]])
    finally:
        model.close()
    assert (first.choice, second.choice) == ("Image A", "Image B")


def test_replicas_are_one_per_core_at_most_and_none_off_the_cpu():
    from qbench.baselines.classical import replica_count, usable_cores
    assert replica_count(ModelConfig(workers=64), on_cpu=True) == usable_cores()
    assert replica_count(ModelConfig(workers=1), on_cpu=True) == 1
    assert replica_count(ModelConfig(workers=8), on_cpu=False) == 1


def test_a_dead_replica_is_a_model_error_not_a_hang():
    model = create_model("brisque", ModelConfig(workers=2))
    try:
        os.kill(next(iter(model.replicas.pool._processes)), signal.SIGKILL)
        with pytest.raises(ModelError, match="worker process .* died"):
            model.predict(score_samples(4), [[photo()]] * 4)
    finally:
        model.close()


REPLICA_PARENT = """
import os, sys, time
from qbench import ModelConfig, create_model
model = create_model("brisque", ModelConfig(workers=2))
print(" ".join(map(str, model.replicas.pool._processes)), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_replicas_exit_when_their_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", REPLICA_PARENT], stdout=subprocess.PIPE,
                              text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    children = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(children) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.2)
    assert not any(alive(pid) for pid in children)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"   # a zombie has exited
    except FileNotFoundError:
        return False
