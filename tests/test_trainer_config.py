"""Training configuration: the shipped YAML files load, and every bad setting is one clear error
before anything heavy loads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qbench.trainer.config import ConfigError, TrainConfig, load_config, validate

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


def write_config(tmp_path: Path, **sections) -> Path:
    """A valid config over real (empty-ish) files in tmp_path, with sections overridden."""
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    meta = tmp_path / "dq.json"
    meta.write_text("[]")
    config = {"model": {"path": str(model)}, "output_dir": str(tmp_path / "out"),
              "data": {"degradation": [{"meta": str(meta)}]},
              "grpo": {"num_generations": 4, "per_device_train_batch_size": 4}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = config[key] | value
        else:
            config[key] = value
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_valid_config_loads(tmp_path):
    config = load_config(write_config(tmp_path))
    assert isinstance(config, TrainConfig)
    assert config.kinds() == ["degradation"]
    assert config.data.degradation[0].meta == tmp_path / "dq.json"


def test_shipped_recipe_carries_the_q_insight_hyper_parameters():
    config = load_config(CONFIGS / "qinsight.yaml", check_paths=False)
    g = config.grpo
    assert (g.num_generations, g.beta, g.epsilon, g.loss_type) == (8, 1e-3, 0.2, "grpo")
    assert (g.learning_rate, g.lr_scheduler_type, g.temperature) == (1e-6, "linear", 1.0)
    assert (g.max_completion_length, g.num_train_epochs) == (256, 10)
    assert (config.rewards.score_epsilon, config.rewards.class_weight,
            config.rewards.level_weight) == (0.35, 0.25, 0.75)
    assert config.kinds() == ["score", "degradation"]
    assert (config.model.min_pixels, config.model.max_pixels) == (3136, 12845056)
    comparison = load_config(CONFIGS / "comparison.yaml", check_paths=False)
    assert comparison.kinds() == ["comparison"]
    # 8 GPUs × 8 × 2 = 128 completions per step, a whole number of groups of 8
    validate(config, check_paths=False, processes=8)


@pytest.mark.parametrize("name", ["accelerate_zero2.yaml", "accelerate_zero3.yaml",
                                  "accelerate_zero3_multinode.yaml"])
def test_accelerate_configs_parse_with_accelerate(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type == "DEEPSPEED"
    assert config.deepspeed_config["zero_stage"] in (2, 3)
    assert config.num_processes == 8 * config.num_machines


def test_batch_not_divisible_by_generations(tmp_path):
    path = write_config(tmp_path, grpo={"num_generations": 8, "per_device_train_batch_size": 6,
                                        "gradient_accumulation_steps": 1})
    with pytest.raises(ConfigError, match=r"= 6 completions per step is not divisible by "
                                          r"num_generations \(8\)"):
        load_config(path)


def test_batch_divisibility_counts_processes(tmp_path, monkeypatch):
    path = write_config(tmp_path, grpo={"num_generations": 8, "per_device_train_batch_size": 4,
                                        "gradient_accumulation_steps": 1})
    with pytest.raises(ConfigError, match="not divisible"):
        load_config(path)
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch with 2 processes: 8 per step
    assert load_config(path).grpo.num_generations == 8


def test_missing_base_model(tmp_path):
    path = write_config(tmp_path, model={"path": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"model.path .*nowhere: no config.json there; put a "
                                          r"local copy of Qwen2.5-VL-7B-Instruct"):
        load_config(path)


def test_missing_data_files(tmp_path):
    path = write_config(tmp_path, data={"degradation": [{"meta": str(tmp_path / "gone.json")}]})
    with pytest.raises(ConfigError, match=r"data.degradation\[0\].meta .*gone.json not found"):
        load_config(path)
    path = write_config(tmp_path, data={"comparison": {"pairs": str(tmp_path / "pairs.json")}})
    with pytest.raises(ConfigError, match=r"data.comparison\[0\].pairs .*pairs.json not found"):
        load_config(path)
    path = write_config(tmp_path, data={"score": [{"folder": str(tmp_path / "koniq")}]})
    with pytest.raises(ConfigError, match=r"data.score\[0\].folder .*koniq is not a folder"):
        load_config(path)


@pytest.mark.parametrize("sections, message", [
    ({"grpo": {"learning_rate": "fast"}}, r"grpo.learning_rate: expected a number"),
    ({"grpo": {"bf16": "yes"}}, r"grpo.bf16: expected true or false"),
    ({"grpo": {"num_generation": 8}}, r"unknown key\(s\) num_generation"),
    ({"grpo": {"loss_type": "ppo"}}, r"grpo.loss_type 'ppo' not one of"),
    ({"data": {"degradation": []}}, r"data: no sources"),
    ({"data": {"degradation": [{"meta": "a.json", "synthetic": "b"}]}}, r"exactly one of meta"),
    ({"eval": {"every": 3}, "grpo": {"save_steps": 2, "num_generations": 4,
                                     "per_device_train_batch_size": 4}},
     r"eval.every \(3\) must be 0 or a multiple of grpo.save_steps"),
    ({"model": {"dtype": "int8"}}, r"model.dtype 'int8' not one of"),
])
def test_bad_settings_are_one_line_errors(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write_config(tmp_path, **sections))
    assert "\n" not in str(caught.value)


def test_numbers_written_without_a_dot_are_read(tmp_path):
    # PyYAML reads 1e-6 as text: the loader must still take it as a number
    assert load_config(write_config(tmp_path, grpo={"learning_rate": "1e-6", "num_generations": 4,
                                                    "per_device_train_batch_size": 4})
                       ).grpo.learning_rate == 1e-6


def test_unreadable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_reports_a_bad_config_in_one_line_without_loading_torch(tmp_path):
    path = write_config(tmp_path)
    probe = ("import sys, json; from qbench.cli import main; code = main(['train', '--config', "
             f"{str(path)!r}, '--set', 'model.path={tmp_path / 'nowhere'}']); "
             "print(json.dumps([code, 'torch' in sys.modules, 'trl' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    code, torch_loaded, trl_loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert (code, torch_loaded, trl_loaded) == (2, False, False)
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "no config.json there" in error_lines[0]


def test_grpo_arguments_carry_the_recipe_and_extra_fields(tmp_path):
    from qbench.trainer.train import grpo_arguments

    config = load_config(write_config(tmp_path, grpo={
        "num_generations": 4, "per_device_train_batch_size": 4, "bf16": False, "use_cpu": True,
        "extra": {"top_p": 0.95, "mask_truncated_completions": True}}))
    args = grpo_arguments(config, [1.0, 0.25, 0.75])
    assert (args.num_generations, args.beta, args.epsilon, args.loss_type) == (4, 1e-3, 0.2, "grpo")
    assert (args.learning_rate, args.temperature, args.max_completion_length) == (1e-6, 1.0, 256)
    assert args.scale_rewards == "group" and args.remove_unused_columns is False
    assert args.reward_weights == [1.0, 0.25, 0.75]
    assert (args.top_p, args.mask_truncated_completions) == (0.95, True)
    assert args.model_init_kwargs == {"dtype": "bfloat16"}


@pytest.mark.parametrize("extra, message", [
    ({"num_generation": 8}, r"grpo.extra: num_generation not GRPOConfig fields"),
    ({"beta": 0.1}, r"grpo.extra: beta already set under grpo"),
    ({"remove_unused_columns": True}, r"grpo.extra: remove_unused_columns set by the trainer"),
])
def test_grpo_extra_rejects_unknown_and_duplicate_fields(tmp_path, extra, message):
    from qbench.trainer.train import grpo_arguments

    config = load_config(write_config(tmp_path, grpo={
        "num_generations": 4, "per_device_train_batch_size": 4, "extra": extra}))
    with pytest.raises(ConfigError, match=message):
        grpo_arguments(config, [1.0])


def test_lora_under_zero3_is_refused_before_loading(tmp_path, monkeypatch):
    path = write_config(tmp_path, lora={"enabled": True})
    assert load_config(path).lora.enabled
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")  # what accelerate launch sets
    with pytest.raises(ConfigError, match="lora.enabled under DeepSpeed ZeRO-3"):
        load_config(path)


def test_command_line_overrides_are_read_as_yaml_and_validated(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path, overrides={"lora.enabled": "true", "grpo.learning_rate": "2e-6",
                                          "eval.tasks": "[koniq, spaq]", "resume": "never"})
    assert (config.lora.enabled, config.grpo.learning_rate) == (True, 2e-6)
    assert (config.eval.tasks, config.resume) == (["koniq", "spaq"], "never")
    with pytest.raises(ConfigError, match=r"not divisible by num_generations \(4\)"):
        load_config(path, overrides={"grpo.per_device_train_batch_size": "3"})
    with pytest.raises(ConfigError, match=r"--set output_dir.x: output_dir is not a section"):
        load_config(path, overrides={"output_dir.x": "y"})
    with pytest.raises(ConfigError, match=r"grpo: unknown key\(s\) lr"):
        load_config(path, overrides={"grpo.lr": "1"})


def test_missing_training_packages_are_named(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "peft" else real(name, *a))
    path = write_config(tmp_path, lora={"enabled": True})
    with pytest.raises(ConfigError, match=r"training needs peft: pip install 'qbench\[train\]'"):
        load_config(path)
    assert not load_config(write_config(tmp_path)).lora.enabled  # no LoRA: peft not needed
