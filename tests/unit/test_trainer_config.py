"""Training configuration: the shipped YAML files load, and every bad setting is one clear error
before anything heavy loads."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qbench.trainer.config import ConfigError, TrainConfig, load_config, validate

CONFIGS = Path(__file__).resolve().parents[2] / "trainer" / "configs"


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


def test_shipped_recipe_carries_the_q_insight_hyper_parameters(monkeypatch):
    """The released scripts' values (trainer/config.py names each source)."""
    for config in (load_config(CONFIGS / "qinsight.yaml", check_paths=False), TrainConfig(
            model={"path": "m"}, output_dir="o", data={"score": [{"folder": "k"}]})):
        g = config.grpo
        assert (g.num_generations, g.beta, g.epsilon, g.loss_type) == (8, 1e-3, 0.2, "grpo")
        assert (g.learning_rate, g.lr_scheduler_type, g.num_train_epochs) == (1e-6, "linear", 10)
        assert (g.temperature, g.top_k, g.top_p, g.max_completion_length) == (1.0, 50, 1.0, 256)
        assert (g.per_device_train_batch_size, g.gradient_accumulation_steps) == (8, 2)
        assert (g.save_steps, g.logging_steps, g.gradient_checkpointing) == (500, 1, False)
        assert g.use_bias_correction_kl is False   # β × k3 added as it is
        r = config.rewards
        assert (r.format_strict, r.answer_parser) == (True, "upstream")
        assert (r.score_epsilon, r.class_weight, r.level_weight) == (0.35, 0.25, 0.75)
        assert (config.model.min_pixels, config.model.max_pixels) == (3136, 12845056)
    assert config.kinds() == ["score"]
    recipe = load_config(CONFIGS / "qinsight.yaml", check_paths=False)
    assert recipe.kinds() == ["score", "degradation"]
    validate(recipe, check_paths=False, processes=8)  # 8 × 2 × 8 = 128, groups of 8
    monkeypatch.setenv("WORLD_SIZE", "8")  # 2 per GPU × 2 needs an even number of processes
    comparison = load_config(CONFIGS / "comparison.yaml", check_paths=False)
    assert comparison.kinds() == ["comparison"]
    g = comparison.grpo
    # U: run_qinsight_comparison.sh: 2 per GPU, accumulation 2, 10 epochs, β 1e-3, N = 8
    assert (g.per_device_train_batch_size, g.gradient_accumulation_steps) == (2, 2)
    assert (g.num_train_epochs, g.beta, g.num_generations, g.save_steps) == (10, 1e-3, 8, 500)
    assert (g.top_k, g.temperature, g.max_completion_length) == (50, 1.0, 256)
    validate(comparison, check_paths=False, processes=16)  # 2 × 2 × 16 = 64: 8 pairs


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
    ({"grpo": {"learning_rate": "fast"}}, r"grpo.learning_rate: should be a valid number"),
    ({"grpo": {"bf16": "yes"}}, r"grpo.bf16: should be a valid boolean \(got 'yes'\)"),
    ({"grpo": {"num_generations": True}}, r"grpo.num_generations: should be a number, not"),
    ({"grpo": {"num_generation": 8}}, r"grpo.num_generation: unknown key; known: "
                                      r"num_generations, beta"),
    ({"grpo": {"loss_type": "ppo"}}, r"grpo.loss_type: should be 'grpo', 'dr_grpo', 'dapo' or "
                                     r"'bnpo' \(got 'ppo'\)"),
    ({"grpo": {"lr_scheduler_type": "cosin"}}, r"grpo.lr_scheduler_type: should be 'linear'"),
    ({"data": {"degradation": []}}, r"data: no sources"),
    ({"data": {"degradation": [{"meta": "a.json", "synthetic": "b"}]}},
     r"data.degradation\[0\]: give exactly one of meta"),
    ({"eval": {"every": 3}, "grpo": {"save_steps": 2, "num_generations": 4,
                                     "per_device_train_batch_size": 4}},
     r"eval.every \(3\) must be 0 or a multiple of grpo.save_steps"),
    ({"model": {"dtype": "int8"}}, r"model.dtype: should be 'bfloat16', 'float16' or 'float32'"),
    ({"lora": {"dropout": 1.0}}, r"lora.dropout: should be less than 1"),
    ({"grpo": {"top_p": 0}}, r"grpo.top_p: should be greater than 0"),
    ({"grpo": {"max_steps": 0, "num_train_epochs": 0}}, r"grpo: set max_steps > 0 or "),
    ({"resume": " "}, r"resume: String should have at least 1 character"),
])
def test_bad_settings_are_one_line_errors(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write_config(tmp_path, **sections))
    assert "\n" not in str(caught.value)


# Every bad setting issue 13 found accepted (or crashing), as `--set KEY=VALUE` on the command
# line: each is refused in one line that names the key.
ISSUE_13 = [
    ({"grpo.learning_rate": ".nan"}, "grpo.learning_rate: should be a finite number (got nan)"),
    ({"grpo.beta": ".nan"}, "grpo.beta: should be a finite number (got nan)"),
    ({"rewards.score_epsilon": ".nan"},
     "rewards.score_epsilon: should be a finite number (got nan)"),
    ({"grpo.temperature": ".inf"}, "grpo.temperature: should be a finite number (got inf)"),
    ({"lora.enabled": "true", "lora.r": "0"},
     "lora.r: should be greater than or equal to 1 (got 0)"),
    ({"model.min_pixels": "-5"}, "model.min_pixels: should be greater than or equal to 1 (got -5)"),
    ({"model.min_pixels": "5000", "model.max_pixels": "4000"},
     "model: min_pixels (5000) is above max_pixels (4000)"),
    ({"data.limit": "-1"}, "data.limit: should be greater than or equal to 1 (got -1)"),
    ({"grpo.extra": "{mystery_knob: 1}"},
     "grpo.extra: mystery_knob: not a GRPOConfig field (TRL 1.16.0)"),
    ({"grpo.num_generations": ".inf"}, "grpo.num_generations: should be a finite number (got inf)"),
]


@pytest.mark.parametrize("overrides, line", ISSUE_13, ids=[" ".join(o) for o, _ in ISSUE_13])
def test_issue_13_bad_overrides_are_refused_in_one_line(tmp_path, overrides, line):
    path = write_config(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides=overrides)
    assert str(caught.value) == f"training config {path}: {line}"


@pytest.mark.slow
def test_issue_13_overrides_at_train_check_load_neither_torch_nor_trl(tmp_path):
    """The same refusals through `qbench train --check --set …`, in a fresh interpreter: exit 2,
    one line on stderr, before torch or TRL is imported."""
    path = write_config(tmp_path)
    cases = [[f"{k}={v}" for k, v in overrides.items()] for overrides, _ in ISSUE_13]
    probe = ("import sys, json, io, contextlib; from qbench.cli.main import main; out = []\n"
             f"for sets in {cases!r}:\n"
             "    err = io.StringIO()\n"
             "    with contextlib.redirect_stderr(err):\n"
             f"        code = main(['train', '--config', {str(path)!r}, '--check'] + "
             "[a for s in sets for a in ('--set', s)])\n"
             "    out.append([code, err.getvalue()])\n"
             "print(json.dumps([out, 'torch' in sys.modules, 'trl' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    outcomes, torch_loaded, trl_loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert (torch_loaded, trl_loaded) == (False, False)
    for (code, stderr), (_, line) in zip(outcomes, ISSUE_13, strict=True):
        lines = [text for text in stderr.splitlines() if text.strip()]
        assert code == 2 and len(lines) == 1, stderr
        assert line in " ".join(stderr.split()), stderr


def test_several_problems_are_reported_together_on_one_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path), overrides={"grpo.beta": "-1", "grpo.bogus": "2"})
    message = str(caught.value)
    assert "\n" not in message
    assert "grpo.beta: should be greater than or equal to 0 (got -1)" in message
    assert "grpo.bogus: unknown key" in message


@pytest.mark.slow
def test_recorded_grpo_config_fields_match_the_installed_trl():
    trl = pytest.importorskip("trl")
    from trl import GRPOConfig

    from qbench.trainer.trl_fields import GRPO_CONFIG_FIELDS, TRL_VERSION

    if trl.__version__ != TRL_VERSION:
        pytest.skip(f"the list is recorded from TRL {TRL_VERSION}; {trl.__version__} installed")
    assert GRPO_CONFIG_FIELDS == {f.name for f in dataclasses.fields(GRPOConfig)}


def test_recipe_fields_are_grpo_config_fields_and_schedulers_are_transformers_own():
    from transformers import SchedulerType

    from qbench.trainer.config import LR_SCHEDULERS, TRAINER_FIELDS, GRPOSettings
    from qbench.trainer.trl_fields import GRPO_CONFIG_FIELDS

    assert set(GRPOSettings.model_fields) - {"extra"} <= GRPO_CONFIG_FIELDS
    assert TRAINER_FIELDS <= GRPO_CONFIG_FIELDS
    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


def test_numbers_written_without_a_dot_are_read(tmp_path):
    # PyYAML reads 1e-6 as text: the loader must still take it as a number
    assert load_config(write_config(tmp_path, grpo={"learning_rate": "1e-6", "num_generations": 4,
                                                    "per_device_train_batch_size": 4})
                       ).grpo.learning_rate == 1e-6
    config = load_config(write_config(tmp_path), overrides={"data.limit": "3",
                                                            "model.min_pixels": "null"})
    assert (config.data.limit, config.model.min_pixels) == (3, None)


def test_unreadable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="training config .*absent.yaml: not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_the_yaml_is_read_with_the_user_file_limits(tmp_path):
    """A repeated key, a binary file and an alias bomb in --set are refused, naming the file
    (or the --set key); the alias bomb and deep nesting as files: tests/unit/test_userfiles.py."""
    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text + "output_dir: elsewhere\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    first = next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith("output_dir"))
    last = len(text.splitlines()) + 1
    assert str(caught.value) == (f"training config {path}: line {last}: output_dir: key given "
                                 f"twice (first on line {first})")
    path.write_bytes(b"model:\n  path: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"^training config .*train.yaml: not UTF-8 text "
                                          r"\(byte 15\): binary\?$"):
        load_config(path)
    path = write_config(tmp_path)
    bomb = "{a: &a [x,x,x,x,x,x,x,x,x], " + ", ".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)) + "}"
    with pytest.raises(ConfigError, match=r"^training config .*: --set grpo.extra: line 1: "
                                          r"i\[8\]\[8\]\[8\]: aliases make more than"):
        load_config(path, overrides={"grpo.extra": bomb})
    with pytest.raises(ConfigError, match=r"--set lora.r: line 1: a: key given twice"):
        load_config(path, overrides={"lora.r": "{a: 1, a: 2}"})


@pytest.mark.slow
def test_cli_reports_a_bad_config_in_one_line_without_loading_torch(tmp_path):
    path = write_config(tmp_path)
    probe = ("import sys, json; from qbench.cli.main import main; code = main(['train', '--config', "
             f"{str(path)!r}, '--set', 'model.path={tmp_path / 'nowhere'}']); "
             "print(json.dumps([code, 'torch' in sys.modules, 'trl' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    code, torch_loaded, trl_loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert (code, torch_loaded, trl_loaded) == (2, False, False)
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "no config.json there" in error_lines[0]


def test_grpo_arguments_carry_the_recipe_and_extra_fields(tmp_path):
    from qbench.trainer.config import TRAINER_FIELDS
    from qbench.trainer.train import grpo_arguments, trainer_fields

    config = load_config(write_config(tmp_path, grpo={
        "num_generations": 4, "per_device_train_batch_size": 4, "bf16": False, "use_cpu": True,
        "extra": {"min_p": 0.05, "importance_sampling_level": "sequence"}}))
    assert trainer_fields(config, [1.0]).keys() == TRAINER_FIELDS
    args = grpo_arguments(config, [1.0, 0.25, 0.75])
    assert (args.num_generations, args.beta, args.epsilon, args.loss_type) == (4, 1e-3, 0.2, "grpo")
    assert (args.learning_rate, args.temperature, args.max_completion_length) == (1e-6, 1.0, 256)
    assert (args.top_k, args.top_p) == (50, 1.0)  # TRL's own default top_k is 0 (off)
    assert args.use_bias_correction_kl is False   # TRL's own default is True
    assert args.scale_rewards == "group" and args.remove_unused_columns is False
    assert args.multi_objective_aggregation == "sum_then_normalize"
    # epsilon_high None: TRL's trainer clips above at epsilon too, as the release does
    assert (args.num_iterations, args.epsilon_high, args.mask_truncated_completions) == (1, None,
                                                                                         False)
    assert (args.weight_decay, args.max_grad_norm, args.warmup_steps) == (0.0, 1.0, 0)
    assert args.reward_weights == [1.0, 0.25, 0.75]
    assert (args.min_p, args.importance_sampling_level) == (0.05, "sequence")
    assert args.model_init_kwargs == {"dtype": "bfloat16"}


def test_recipe_fields_a_user_may_change_are_settable(tmp_path):
    """The advantage scaling and the other recipe choices are config keys (and --set
    overrides), not values fixed by the trainer."""
    from qbench.trainer.train import grpo_arguments

    path = write_config(tmp_path, grpo={"num_generations": 4, "per_device_train_batch_size": 4,
                                        "bf16": False, "use_cpu": True})
    changed = {"grpo.scale_rewards": "none", "grpo.multi_objective_aggregation":
               "normalize_then_sum", "grpo.num_iterations": "2", "grpo.epsilon_high": "0.28",
               "grpo.mask_truncated_completions": "true", "grpo.weight_decay": "0.1",
               "grpo.max_grad_norm": "0.5", "grpo.warmup_steps": "0.1"}
    args = grpo_arguments(load_config(path, overrides=changed), [1.0])
    assert (args.scale_rewards, args.multi_objective_aggregation) == ("none", "normalize_then_sum")
    assert (args.num_iterations, args.epsilon, args.epsilon_high) == (2, 0.2, 0.28)
    assert args.mask_truncated_completions is True
    assert (args.weight_decay, args.max_grad_norm, args.warmup_steps) == (0.1, 0.5, 0.1)
    assert grpo_arguments(load_config(path, overrides={"grpo.scale_rewards": "batch"}),
                          [1.0]).scale_rewards == "batch"
    with pytest.raises(ConfigError, match=r"grpo.scale_rewards: should be 'group', 'batch' or "
                                          r"'none' \(got 'std'\)"):
        load_config(path, overrides={"grpo.scale_rewards": "std"})
    with pytest.raises(ConfigError, match=r"grpo.extra: scale_rewards: already set under grpo"):
        load_config(path, overrides={"grpo.extra": "{scale_rewards: none}"})


@pytest.mark.parametrize("extra, message", [
    ({"num_generation": 8}, r"grpo.extra: num_generation: not a GRPOConfig field"),
    ({"beta": 0.1}, r"grpo.extra: beta: already set under grpo"),
    ({"remove_unused_columns": True}, r"grpo.extra: remove_unused_columns: set by the trainer"),
    ({"generation_kwargs": {"typical_p": float("nan")}},
     r"grpo.extra: generation_kwargs.typical_p should be a finite number"),
])
def test_grpo_extra_rejects_unknown_duplicate_and_non_finite_fields(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, grpo={
            "num_generations": 4, "per_device_train_batch_size": 4, "extra": extra}))


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
    with pytest.raises(ConfigError, match=r"grpo.lr: unknown key; known: num_generations"):
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
