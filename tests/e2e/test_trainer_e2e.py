"""End to end on CPU: a tiny random Qwen2.5-VL, a handful of fixture images of all three kinds,
3 GRPO steps with N = 4 through TRL, the checkpoint evaluated by `qbench run`; and a resume
after a crash.

A random model never writes <think>/<answer>, so every recipe reward is 0 for every completion:
the group advantage would be 0 and no gradient would flow. The runs therefore add one test
reward with variance, `even_token_share` (the share of even token ids in the completion), which
differs between the N completions of a group; that is what moves the weights here, while the
recipe rewards are still computed and logged for every step.
"""
from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from qbench.cli.main import main as qbench_main
from qbench.testing.tiny import build_tiny_qwen2_5_vl
from qbench.trainer.config import (
    ComparisonSource,
    DataSettings,
    DegradationSource,
    EvalSettings,
    GRPOSettings,
    LoraSettings,
    ModelSettings,
    ScoreSource,
    TrainConfig,
    load_config,
)
from qbench.trainer.train import train

pytestmark = pytest.mark.slow


def even_token_share(completion_ids, **_):
    """Test reward with variance across a group (see the module docstring)."""
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def image(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.name


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny") / "qwen2_5_vl")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DataSettings:
    """One training sample of each kind, so that 3 steps of one prompt (one epoch) put every
    kind through generation and its rewards; the DQ test split holds 4 for the evaluation."""
    root = tmp_path_factory.mktemp("data")
    koniq = root / "koniq"
    names = [image(koniq / "1024x768" / f"k{i}.jpg", i) for i in range(3)]
    sets = ("training", "test", "test")
    (koniq / "koniq10k_distributions_sets.csv").write_text("image_name,MOS,set\n" + "".join(
        f"{n},{2 + i},{split}\n" for i, (n, split) in enumerate(zip(names, sets, strict=True))))
    dq = root / "dq495k"
    records = [{"img_lq": image(dq / f"d{i}.png", 10 + i), "distortion_class": cls,
                "severity": level} for i, (cls, level) in enumerate([("noise", 2), ("blur", 4),
                                                                      ("null", 0), ("JPEG", 3)])]
    (dq / "train.json").write_text(json.dumps(records[:1]))
    (dq / "test.json").write_text(json.dumps(records))  # the eval split of the harness task
    pairs = root / "diffiqa"
    for name, seed in (("r.png", 20), ("a.png", 21), ("b.png", 22)):
        image(pairs / name, seed)
    (pairs / "train.json").write_text(json.dumps(
        [{"ref_image": "r.png", "ImageA": "a.png", "ImageB": "b.png", "result": "Image B"}]))
    return DataSettings(score=[ScoreSource(folder=koniq)],
                        degradation=[DegradationSource(meta=dq / "train.json")],
                        comparison=[ComparisonSource(pairs=pairs / "train.json")], seed=1)


def tiny_config(model: Path, data: DataSettings, output_dir: Path,
                evaluation: EvalSettings | None = None) -> TrainConfig:
    """The recipe shrunk for a CPU: N = 4, one prompt per step, 16 completion tokens, float32,
    a large learning rate so that 3 steps visibly move the weights."""
    return TrainConfig(
        model=ModelSettings(path=model, dtype="float32", min_pixels=None, max_pixels=None),
        output_dir=output_dir, data=data,
        grpo=GRPOSettings(num_generations=4, per_device_train_batch_size=4,
                          gradient_accumulation_steps=1, max_steps=3,
                          save_steps=1, max_completion_length=16, learning_rate=1e-2,
                          bf16=False, gradient_checkpointing=False, use_cpu=True),
        eval=evaluation or EvalSettings())


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(folder / "model.safetensors")


def test_grpo_steps_train_log_save_and_evaluate(tiny_model, data, tmp_path):
    dq_folder = data.degradation[0].meta.parent
    evaluation = EvalSettings(every=3, tasks=["dq495k"], data_paths={"dq495k": dq_folder}, limit=4,
                              batch_size=4, model_options={"max_new_tokens": 16})
    config = tiny_config(tiny_model, data, tmp_path / "run", evaluation)
    result = train(config, extra_rewards=[(even_token_share, 1.0)])

    assert result.global_step == 3
    steps = [h for h in result.log_history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    for entry in steps:
        assert math.isfinite(entry["loss"]) and entry["grad_norm"] > 0
        # every reward component of the mix, logged separately, and both format rates
        for name in ("format_reward", "score_reward", "degradation_class_reward",
                     "degradation_level_reward", "comparison_reward", "even_token_share"):
            assert f"rewards/{name}/mean" in entry
        assert entry["format/loose_rate"] == 0.0 and entry["format/strict_rate"] == 0.0
        assert entry["rewards/even_token_share/std"] > 0  # the variance that drives the update
    # each kind's own reward was computed on exactly one step (logged as None on the steps
    # whose prompt was of another kind)
    for name in ("score_reward", "degradation_class_reward", "comparison_reward"):
        assert sum(h[f"rewards/{name}/mean"] is not None for h in steps) == 1
    # β = 1e-3: the reference model is there, and the policy moves away from it
    assert steps[0]["kl"] == 0.0 and steps[-1]["kl"] > 0

    before, after = tensors(tiny_model), tensors(result.final_model)
    assert (result.final_model / "processor_config.json").exists()  # loadable on its own
    assert before.keys() == after.keys()
    changed = [k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())]
    assert changed and all(np.isfinite(after[k].numpy()).all() for k in changed)

    recorded = json.loads((config.output_dir / "train_config.json").read_text())
    assert recorded["samples"] == {"score": 1, "degradation": 1, "comparison": 1}

    # the periodic evaluation ran on checkpoint-3 through the harness
    history = [json.loads(line) for line in
               (config.output_dir / "eval" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [3] and history[0]["eval/dq495k/n"] == 4.0

    # and `qbench run` evaluates the checkpoint directly
    checkpoint = config.output_dir / "checkpoint-3"
    assert (checkpoint / "model.safetensors").exists()
    code = qbench_main(["run", "--model", "qinsight", "--model-path", str(checkpoint),
                        "--tasks", "dq495k", "--data", f"dq495k={dq_folder}", "--limit", "4",
                        "--model-arg", "max_new_tokens=16", "--output", str(tmp_path / "results"),
                        "--run-name", "ckpt3", "--no-progress", "--workers", "0"])
    rows = [json.loads(line) for line in
            (tmp_path / "results" / "ckpt3" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    # a random model's text is generated and parsed (it fails the parse, counted, not raised);
    # a task none of whose answers parse is reported failed: exit status 1
    assert all(r["status"] in ("ok", "unparsed") and r["text"] for r in rows)
    assert code == (0 if any(r["status"] == "ok" for r in rows) else 1)


class SimulatedCrash(Exception):
    pass


def crash_after_saving(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise SimulatedCrash(f"killed after saving step {step}")

    return Crash()


def weights_at_start(record: dict):
    """Records the policy's weights when training (re)starts, after any resume loaded them."""
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            record.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    return Probe()


def test_resume_after_a_crash_reaches_the_last_step(tiny_model, data, tmp_path, capsys):
    """Crash after step 1; resume (weights, optimizer, step) and crash after step 2; then
    `qbench train --config` (resume: auto) finishes step 3."""
    from transformers import AutoModelForImageTextToText

    path = tmp_path / "tiny.yaml"
    settings = {
        "model": {"path": str(tiny_model), "dtype": "float32", "min_pixels": None,
                  "max_pixels": None},
        "data": {"degradation": [{"meta": str(data.degradation[0].meta)}]},
        "grpo": {"num_generations": 4, "per_device_train_batch_size": 4,
                 "gradient_accumulation_steps": 1, "max_steps": 3, "save_steps": 1,
                 "max_completion_length": 16, "learning_rate": 1e-2,
                 "bf16": False, "gradient_checkpointing": False, "use_cpu": True},
        "output_dir": str(tmp_path / "run")}
    path.write_text(yaml.safe_dump(settings))
    config = load_config(path)

    def checkpoints() -> list[str]:
        return sorted(p.name for p in config.output_dir.glob("checkpoint-*"))

    with pytest.raises(SimulatedCrash, match="after saving step 1"):
        train(config, extra_rewards=[(even_token_share, 1.0)], callbacks=[crash_after_saving(1)])
    assert checkpoints() == ["checkpoint-1"]

    started: dict = {}
    with pytest.raises(SimulatedCrash, match="after saving step 2"):
        train(config, extra_rewards=[(even_token_share, 1.0)],
              callbacks=[weights_at_start(started), crash_after_saving(2)])
    assert checkpoints() == ["checkpoint-1", "checkpoint-2"]
    # the resumed run started from step 1's weights, not the base model's
    step1 = AutoModelForImageTextToText.from_pretrained(
        config.output_dir / "checkpoint-1").state_dict()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    assert started.keys() == step1.keys()
    assert all(np.array_equal(started[k].numpy(), step1[k].numpy()) for k in step1)
    assert not all(np.array_equal(base[k].numpy(), step1[k].numpy()) for k in step1)

    assert qbench_main(["train", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"resuming from {config.output_dir / 'checkpoint-2'}" in captured.out + captured.err
    assert checkpoints() == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    state = json.loads((config.output_dir / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # earlier steps' logs came back with the checkpoints; each step was trained once
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
    assert (config.output_dir / "final" / "model.safetensors").exists()


def test_lora_adapters_train_and_merge_into_a_full_checkpoint(tiny_model, data, tmp_path):
    config = tiny_config(tiny_model, DataSettings(degradation=data.degradation), tmp_path / "lora")
    config.lora = LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0)
    config.grpo.max_steps = config.grpo.save_steps = 2
    result = train(config, extra_rewards=[(even_token_share, 1.0)])

    before, after = tensors(tiny_model), tensors(result.final_model)
    assert before.keys() == after.keys()  # merged: the base model's names, no adapter tensors
    changed = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    adapted = {k for k in before if k.startswith("model.layers.") and k.endswith("_proj.weight")}
    # the adapters sat on the language model's linear layers only: the vision tower is untouched
    assert changed and changed <= adapted


def test_processor_takes_the_recipe_image_limits_and_saves_them(tiny_model, tmp_path):
    from qbench.backends.vlm import load_processor
    from qbench.trainer.train import load_training_processor

    settings = ModelSettings(path=tiny_model, min_pixels=3136, max_pixels=224 * 224)
    processor = load_training_processor(settings)
    big = Image.new("RGB", (1000, 800))
    grid = processor.image_processor(images=[big], return_tensors="pt")["image_grid_thw"][0]
    pixels = int(grid[1] * grid[2]) * 14 * 14
    assert 112 * 112 < pixels <= 224 * 224     # the tiny checkpoint alone would allow 112²
    processor.save_pretrained(tmp_path / "saved")
    size = load_processor(tmp_path / "saved", "test").image_processor.size
    assert (size.shortest_edge, size.longest_edge) == (3136, 224 * 224)


def test_a_failed_periodic_evaluation_is_recorded_and_training_goes_on(tmp_path):
    from rich.console import Console
    from transformers import TrainerControl, TrainerState

    from qbench.trainer.train import harness_callback

    settings = EvalSettings(every=2, tasks=["dq495k"], data_paths={"dq495k": tmp_path})
    printed = io.StringIO()
    callback = harness_callback(settings, tmp_path / "run", Console(file=printed, width=200))
    state = TrainerState()
    state.global_step = 2  # checkpoint-2 was never written: the harness cannot load a model
    callback.on_save(None, state, TrainerControl())
    history = [json.loads(line) for line in
               (tmp_path / "run" / "eval" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["step"] == 2
    assert "checkpoint-2" in history[0]["eval/error"]
    assert state.log_history == history
    assert "step 2 evaluation: eval/error" in printed.getvalue()
    state.global_step = 3  # not a multiple of `every`: nothing runs
    callback.on_save(None, state, TrainerControl())
    assert len((tmp_path / "run" / "eval" / "history.jsonl").read_text().splitlines()) == 1


def test_two_processes_under_torchrun(tiny_model, tmp_path):
    """The distributed path on the CPU (gloo): WORLD_SIZE enters the batch check, the synthetic
    set is generated once by the main process, each step takes one prompt per process."""
    photo = tmp_path / "photo.png"
    image(photo, 5)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_model), "dtype": "float32", "min_pixels": None,
                  "max_pixels": None},
        "data": {"degradation": [{"synthetic": str(tmp_path / "synthetic"),
                                  "synthetic_photos": [str(photo)],
                                  "synthetic_crops_per_photo": 1}], "limit": 8},
        "grpo": {"num_generations": 4, "per_device_train_batch_size": 4,
                 "gradient_accumulation_steps": 1, "max_steps": 2, "save_steps": 2,
                 "max_completion_length": 8, "bf16": False,
                 "gradient_checkpointing": False, "use_cpu": True},
        "output_dir": str(tmp_path / "run")}))
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "qbench",
                           "train", "--config", str(path)], capture_output=True, text=True,
                          timeout=300, check=False, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (done.stdout + done.stderr).count("trained 2 steps") == 2  # both ranks finished
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    # 2 processes × 4 completions = 2 prompts of the 8 per step
    assert [h["epoch"] for h in state["log_history"] if "loss" in h] == [0.25, 0.5]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
    assert len(json.loads((tmp_path / "synthetic" / "train.json").read_text())) == 21
