"""The guides' code works as written: the task of docs/adding-a-task.md, the model of
docs/adding-a-model.md and the metric of docs/adding-a-metric.md, taken from the markdown,
run together through `qbench run` on a small set the test builds."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from qbench.cli.main import main
from qbench.core import registry
from qbench.scoring import metrics as scoring

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(guide: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / guide).read_text(), re.S)


@pytest.fixture
def clean_registries():
    """The guides register a task, a model and a metric; they are gone after the test."""
    tasks, models, metrics = dict(registry.TASKS), dict(registry.MODELS), list(scoring.METRICS)
    yield
    registry.TASKS.clear()
    registry.TASKS.update(tasks)
    registry.MODELS.clear()
    registry.MODELS.update(models)
    scoring.METRICS[:] = metrics


def test_the_guides_task_model_and_metric_run_end_to_end(tmp_path, clean_registries, capsys):
    (task_code,) = python_blocks("adding-a-task.md")
    (model_code,) = python_blocks("adding-a-model.md")
    (metric_code,) = python_blocks("adding-a-metric.md")
    (tmp_path / "my_tasks.py").write_text(task_code)
    (tmp_path / "my_models.py").write_text(model_code)
    exec(compile(metric_code, "adding-a-metric.md", "exec"), {})

    # 500 photos (the guide's expected count) whose texture grows with their rating: the
    # guide's gradient model should rank them almost perfectly.
    folder = tmp_path / "data" / "lab-photos"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 100, 500)
    lines = ["name,mos"]
    for i, value in enumerate(mos):
        pixels = 128 + rng.normal(0, 1, (16, 16, 3)) * (5 + value)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / "images" / f"{i}.png")
        lines.append(f"{i}.png,{value:.3f}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")

    code = main(["--include", str(tmp_path / "my_tasks.py"), "--include",
                 str(tmp_path / "my_models.py"), "run", "--model", "sharpness",
                 "--model-arg", "scale=2", "--tasks", "lab-photos", "--data-root",
                 str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr()
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    measured = json.loads((run_dir / "metrics.json").read_text())["lab-photos"]
    assert measured["status"] == "ok" and measured["n"] == 500
    assert measured["srcc"] > 0.9
    # the metric of the guide, on the same predictions, computed here
    predictions = {}
    for line in (run_dir / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        predictions[record["sample_id"]] = record["score"]
    truth = {f"{i}.png": value for i, value in enumerate(mos)}
    keys = sorted(truth)
    assert measured["srcc"] == pytest.approx(
        stats.spearmanr([predictions[k] for k in keys], [truth[k] for k in keys])[0], abs=1e-3)
    assert measured["mae"] == pytest.approx(
        np.mean([abs(predictions[k] - truth[k]) for k in keys]), rel=1e-3)
