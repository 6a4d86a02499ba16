"""The training configuration: pydantic models filled from a YAML file and checked before
anything heavy (torch, TRL, the model) loads, so a typo or a missing path costs seconds, not a
job slot.

pydantic does the checking: types, finite numbers, ranges, allowed words, unknown keys, and the
rules that tie two settings together (min_pixels ≤ max_pixels, eval.every a multiple of
save_steps, grpo.extra names that GRPOConfig has). Every problem becomes one `ConfigError` line
naming the key. What depends on the machine (processes, installed packages, files) is checked
after, in `check_settings` and `check_files`.

Defaults are the released Q-Insight recipe. Sources, marked `U:` below, are files of
bytedance/Q-Insight at commit 08308fdb21c1, under src/open-r1-multimodal/:
  run.sh    run_qinsight_score_and_dist.sh        cmp.sh  run_qinsight_comparison.sh
  mt.py     src/open_r1/qinsight_multi_task.py    cfg.py  src/open_r1/trainer/grpo_config.py
  tr.py     src/open_r1/trainer/grpo_trainer.py (grpo_trainer_comparison.py alike)
Where the paper (REFERENCE §1) and the script disagree, the script wins and the paper is noted.
Relative paths are taken from the current directory.
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from qbench.core.launcher import launcher_place
from qbench.core.userfiles import UserFileError, describe, load_yaml, parse_yaml, shown
from qbench.trainer.trl_fields import GRPO_CONFIG_FIELDS, TRL_VERSION

# U: mt.py:91-98 (the script's min/max_pixels defaults, passed to the processor, tr.py:297-298).
MIN_PIXELS = 3136
MAX_PIXELS = 12845056
Dtype = Literal["bfloat16", "float16", "float32"]
LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
VllmMode = Literal["colocate", "server"]
ScaleRewards = Literal["group", "batch", "none"]
Aggregation = Literal["sum_then_normalize", "normalize_then_sum"]
# transformers' SchedulerType values (tests compare them with the installed transformers).
LrScheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                      "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau",
                      "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
                      "greedy"]
LR_SCHEDULERS: tuple[str, ...] = get_args(LrScheduler)
# GRPOConfig fields the trainer sets itself (train.grpo_arguments); `grpo.extra` cannot.
TRAINER_FIELDS = frozenset({"output_dir", "save_strategy", "logging_strategy",
                            "remove_unused_columns", "reward_weights", "model_init_kwargs"})
# LoRA on the language model only: the vision tower's MLP reuses the names gate/up/down_proj.
LANGUAGE_MODEL_LINEAR = (r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj"
                         r"|down_proj)")


class ConfigError(ValueError):
    """A training configuration that cannot run; one line naming the key and the fix."""


# ------------------------------------------------------------------------------ value types

def _not_a_flag(value: Any) -> Any:
    """YAML `true` is not a number (pydantic would read it as 1)."""
    if isinstance(value, bool):
        raise ValueError("should be a number, not true/false")
    return value


Number = Annotated[float, BeforeValidator(_not_a_flag)]
Whole = Annotated[int, BeforeValidator(_not_a_flag)]
Positive = Annotated[Number, Field(gt=0)]
NonNegative = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(gt=0, le=1)]
Count = Annotated[Whole, Field(ge=1)]
NonNegativeWhole = Annotated[Whole, Field(ge=0)]
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]


def _as_list(value: Any) -> Any:
    """One source may be written without the list dashes; an empty section is no sources."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _finite_everywhere(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} should be a finite number, got {value}")
    if isinstance(value, dict):
        for key, inner in value.items():
            _finite_everywhere(inner, f"{where}.{key}")
    if isinstance(value, list):
        for i, inner in enumerate(value):
            _finite_everywhere(inner, f"{where}[{i}]")


class Settings(BaseModel):
    """Every section: unknown keys, NaN and infinity are refused."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())


# ------------------------------------------------------------------------------ sections

class ModelSettings(Settings):
    path: UserPath
    dtype: Dtype = "bfloat16"   # U: run.sh:71-72 (bf16)
    # U: run.sh:76 uses flash_attention_2; None here is transformers' default (sdpa), the same
    # attention computed by another kernel, because flash-attn is not a qbench dependency.
    attn_implementation: str | None = None
    min_pixels: Count | None = MIN_PIXELS   # None: keep the checkpoint processor's setting
    max_pixels: Count | None = MAX_PIXELS

    @model_validator(mode="after")
    def _pixels_ordered(self) -> ModelSettings:
        if (self.min_pixels is not None and self.max_pixels is not None
                and self.min_pixels > self.max_pixels):
            raise ValueError(f"min_pixels ({self.min_pixels}) is above max_pixels "
                             f"({self.max_pixels})")
        return self


class ScoreSource(Settings):
    """Score samples from a registered score task (KonIQ train split by default; U: the
    script's data_config/iqa_score.yaml reads the DeQA-Score train_koniq_7k.json)."""
    folder: UserPath
    task: str = "koniq"
    split: str = "train"


class DegradationSource(Settings):
    """Degradation samples: a DQ-495K / KADIS-style meta JSON (`meta`, image paths relative to
    `images`, default the meta's folder), or qbench's synthetic generator writing into
    `synthetic` (from `synthetic_photos`, default the photographs bundled with scikit-image that
    the demo test set does not use)."""
    meta: UserPath | None = None
    images: UserPath | None = None
    synthetic: UserPath | None = None
    synthetic_photos: list[UserPath] = Field(default_factory=list)
    synthetic_seed: NonNegativeWhole = 0
    synthetic_crops_per_photo: Count = 2

    @model_validator(mode="after")
    def _one_source(self) -> DegradationSource:
        if (self.meta is None) == (self.synthetic is None):
            raise ValueError("give exactly one of meta (a DQ-style meta JSON) or synthetic "
                             "(a folder to generate into)")
        return self


class ComparisonSource(Settings):
    """DiffIQA pairs: a JSON list of {ref_image, ImageA, ImageB, result}, image paths relative to
    `images` (default the JSON's folder)."""
    pairs: UserPath
    images: UserPath | None = None


class DataSettings(Settings):
    score: list[ScoreSource] = Field(default_factory=list)
    degradation: list[DegradationSource] = Field(default_factory=list)
    comparison: list[ComparisonSource] = Field(default_factory=list)
    seed: NonNegativeWhole = 42       # the mix is shuffled with it (U: run.sh:73 data_seed 42)
    image_first: StrictBool = True    # U: mt.py:271, the image before the question
    limit: Count | None = None        # keep the first `limit` samples of the shuffled mix

    @field_validator("score", "degradation", "comparison", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return _as_list(value)


class RewardSettings(Settings):
    # True: U: mt.py:378-390 (cmp: qinsight_comparison.py:282-295), the released pattern with its
    # newlines and whitespace tolerance; False: the system prompt's own tag order, any spacing.
    format_strict: StrictBool = True
    # "upstream": the answer read as U: mt.py:296-335 reads it (the first <answer>…</answer>,
    # a double-quoted "rating" followed by digits, quoted class and severity words compared
    # exactly); "evaluator": qbench's lenient parser, the one `qbench run` scores with.
    answer_parser: Literal["upstream", "evaluator"] = "upstream"
    score_epsilon: Positive = 0.35    # U: run.sh:81 --score_reward_threshold 0.35
    format_weight: NonNegative = 1.0  # U: cfg.py:249, reward_weights None = 1.0 each
    score_weight: NonNegative = 1.0
    class_weight: NonNegative = 0.25  # α1, U: mt.py:333
    level_weight: NonNegative = 0.75  # α2, U: mt.py:335
    comparison_weight: NonNegative = 1.0


class GRPOSettings(Settings):
    """The GRPOConfig fields the recipe sets; `extra` passes any other GRPOConfig field on."""
    num_generations: Annotated[Whole, Field(ge=2)] = 8   # U: run.sh:67, cmp.sh:66
    beta: NonNegative = 1e-3                  # U: run.sh:82, cmp.sh:81
    # U: tr.py:689-693 adds beta × the k3 estimate to the loss as it is; TRL 1.16 by default
    # multiplies it by the importance ratio, which changes its gradient even on-policy.
    use_bias_correction_kl: StrictBool = False
    epsilon: Positive = 0.2                   # U: cfg.py:245 (clip)
    epsilon_high: Positive | None = None      # None: = epsilon, U: tr.py:684 clips symmetrically
    loss_type: LossType = "grpo"   # U: tr.py:700
    # Advantages: U: tr.py:604-611 sums the weighted rewards, then takes (r − group mean) /
    # (group std + 1e-4), "group" here; "batch" divides by the std of the whole batch, "none"
    # leaves the std out (Dr. GRPO). "normalize_then_sum" normalises each reward in its group
    # before the weighted sum (GDPO).
    scale_rewards: ScaleRewards = "group"
    multi_objective_aggregation: Aggregation = "sum_then_normalize"
    # Policy updates per generated batch (μ); U: cfg.py:241-244 defaults to 1, the script sets
    # none. Above 1, the importance ratio of later updates is no longer 1 and the clip acts.
    num_iterations: Count = 1
    learning_rate: Positive = 1e-6            # U: cfg.py:227 (the script sets none)
    lr_scheduler_type: LrScheduler = "linear"   # TrainingArguments' default there
    num_train_epochs: NonNegative = 10.0      # U: run.sh:77, cmp.sh:76
    max_steps: Annotated[Whole, Field(ge=-1)] = -1        # -1: the epochs decide
    # Completions per optimizer step = per_device × accumulation × processes; U: run.sh:68-69
    # sets 8 × 2. The paper's "total batch 128 on 16 GPUs" is 8 × 16 without the accumulation;
    # the script, followed here, makes that 256 on 16 GPUs (REFERENCE §1).
    per_device_train_batch_size: Count = 8
    gradient_accumulation_steps: Count = 2
    # Sampling as U: tr.py:342-347 builds it: GenerationConfig(do_sample=True, temperature=1,
    # max_new_tokens=max_completion_length) under transformers 4.51.3 (requirements.txt), whose
    # defaults fill in top_k=50, top_p=1.0, no repetition penalty. (4.51 takes these from the
    # checkpoint's generation_config.json instead when transformers >= 4.50 wrote it; the base
    # model, Qwen2.5-VL-7B-Instruct, was released in January 2025, before 4.50.) TRL 1.16's
    # own default top_k is 0 (off).
    temperature: Positive = 1.0
    top_k: NonNegativeWhole = 50
    top_p: Fraction = 1.0
    max_completion_length: Count = 256        # U: cfg.py:159 (the script sets none)
    # True drops completions cut at max_completion_length from the loss (DAPO); U: tr.py:527-531
    # keeps them, with the tokens generated so far.
    mask_truncated_completions: StrictBool = False
    # The optimiser: transformers 4.51's TrainingArguments defaults, which U: run.sh leaves as
    # they are: AdamW, weight decay 0, gradients clipped to norm 1, no warm-up.
    weight_decay: NonNegative = 0.0
    max_grad_norm: NonNegative = 1.0
    warmup_steps: NonNegative = 0             # steps; below 1, a share of the training steps
    bf16: StrictBool = True                   # U: run.sh:71
    # U: run.sh:75 trains without; it changes memory and time, not the update.
    gradient_checkpointing: StrictBool = False
    logging_steps: Count = 1                  # U: run.sh:70
    save_steps: Count = 500                   # U: run.sh:79 (run.sh:80 saves the model only;
    save_total_limit: Count | None = None     # qbench keeps the optimizer state, to resume)
    seed: NonNegativeWhole = 42
    use_vllm: StrictBool = False
    vllm_mode: VllmMode = "colocate"
    vllm_gpu_memory_utilization: Fraction = 0.3
    vllm_server_base_url: str | None = None
    report_to: str = "none"                   # U: run.sh:74 wandb; not a qbench dependency
    use_cpu: StrictBool = False
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _known_extra_fields(cls, extra: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(extra) - GRPO_CONFIG_FIELDS)
        if unknown:
            what = "a GRPOConfig field" if len(unknown) == 1 else "GRPOConfig fields"
            raise ValueError(f"{', '.join(unknown)}: not {what} (TRL {TRL_VERSION})")
        twice = sorted(set(extra) & (set(cls.model_fields) - {"extra"}))
        if twice:
            raise ValueError(f"{', '.join(twice)}: already set under grpo")
        taken = sorted(set(extra) & TRAINER_FIELDS)
        if taken:
            raise ValueError(f"{', '.join(taken)}: set by the trainer itself")
        for key, value in extra.items():
            _finite_everywhere(value, key)
        return extra

    @model_validator(mode="after")
    def _has_length(self) -> GRPOSettings:
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        return self


class LoraSettings(Settings):
    enabled: StrictBool = False
    r: Count = 64
    alpha: Count = 128
    dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.05
    target_modules: str = LANGUAGE_MODEL_LINEAR


# `qbench run` options the periodic evaluation sets itself, and its own defaults.
EVAL_SETS = frozenset({"model_path", "output_dir", "run_name", "progress", "include", "wait",
                       "shard"})
EVAL_DEFAULTS: dict[str, Any] = {"model": "qinsight", "tasks": ["koniq"], "limit": 200}


class EvalSettings(Settings):
    """Evaluate every `every` steps (a multiple of save_steps: it evaluates the checkpoint just
    written) through `qbench run`; 0 turns it off. Every other key is a `qbench run` option by
    its RunConfig name (qbench/run/runner.py: tasks, data_root, data_paths, split, limit,
    batch_size, device, model, model_options, task_options, ...), checked by its type there:
    an option is declared once, for runs and for the evaluation alike."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, protected_namespaces=())
    every: NonNegativeWhole = 0

    @model_validator(mode="after")
    def _run_options(self) -> EvalSettings:
        import typing

        from pydantic import TypeAdapter

        from qbench.run.runner import RunConfig
        hints = typing.get_type_hints(RunConfig)
        given = dict(self.model_extra or {})
        unknown = sorted(set(given) - set(hints))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}: besides `every`, eval takes "
                             f"qbench run options by their RunConfig names "
                             f"({', '.join(k for k in hints if k not in EVAL_SETS)})")
        fixed = sorted(set(given) & EVAL_SETS)
        if fixed:
            raise ValueError(f"{', '.join(fixed)}: set by the evaluation itself")
        extra = self.model_extra
        assert extra is not None   # a model with extra="allow" keeps its other keys there
        for key, value in given.items():
            try:
                extra[key] = TypeAdapter(hints[key]).validate_python(value)
            except ValidationError as exc:
                raise ValueError(f"{key}: {exc.errors()[0]['msg']} (got {shown(value)})"
                                 ) from None
        return self

    def run_config(self, **fixed: Any) -> Any:
        """The RunConfig of one evaluation: the defaults, the options given, then `fixed`
        (model_path, output_dir, run_name)."""
        from qbench.run.runner import RunConfig
        return RunConfig(**(EVAL_DEFAULTS | dict(self.model_extra or {}) | {"progress": False}
                            | fixed))


class TrainConfig(Settings):
    model: ModelSettings
    output_dir: UserPath
    data: DataSettings = Field(default_factory=DataSettings)
    rewards: RewardSettings = Field(default_factory=RewardSettings)
    grpo: GRPOSettings = Field(default_factory=GRPOSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    # "auto": the last checkpoint in output_dir if any; "never"; or a checkpoint folder
    resume: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = "auto"

    def kinds(self) -> list[str]:
        sources = {"score": self.data.score, "degradation": self.data.degradation,
                   "comparison": self.data.comparison}
        return [kind for kind, listed in sources.items() if listed]

    @model_validator(mode="after")
    def _sections_agree(self) -> TrainConfig:
        if not self.kinds():
            raise ValueError("data: no sources; give at least one of data.score, "
                             "data.degradation, data.comparison")
        every, save = self.eval.every, self.grpo.save_steps
        if every % save:
            raise ValueError(f"eval.every ({every}) must be 0 or a multiple of grpo.save_steps "
                             f"({save}): it evaluates the checkpoint just saved")
        if every and self.lora.enabled:
            raise ValueError("eval.every with lora.enabled: checkpoints hold only the adapter; "
                             "evaluate the merged final model (output_dir/final) instead")
        return self


# ------------------------------------------------------------------------------ YAML → settings

def settings_from(data: Any) -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of settings at the top, got {shown(data)}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, TrainConfig)) from None


def set_value(data: dict[str, Any], dotted: str, text: str) -> None:
    """Apply one command-line override `section.key=value` to the raw YAML mapping; the value is
    read as YAML (true, 1e-6, [a, b], null)."""
    *sections, key = dotted.split(".")
    node = data
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {section} is not a section")
    try:
        node[key] = parse_yaml(text, f"--set {dotted}")
    except UserFileError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: Path, *, overrides: dict[str, str] | None = None,
                check_paths: bool = True) -> TrainConfig:
    """Read a training YAML file, apply `overrides` (dotted key → YAML text), validate;
    ConfigError, one line naming the file."""
    try:
        data = load_yaml(path, "training config")
    except UserFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        if overrides:
            if not isinstance(data, dict):
                raise ConfigError("expected a mapping of settings at the top")
            for dotted, text in overrides.items():
                set_value(data, dotted, text)
        config = settings_from(data)
        validate(config, check_paths=check_paths)
    except ConfigError as exc:
        raise ConfigError(f"training config {path}: {exc}") from None
    return config


# ------------------------------------------------------------------------------ this machine

def world_size() -> int:
    """Processes taking part (accelerate launch and torchrun set WORLD_SIZE)."""
    return launcher_place().world


def check_settings(config: TrainConfig, processes: int) -> None:
    """What the settings need from this launch and this installation."""
    g = config.grpo
    completions = g.per_device_train_batch_size * g.gradient_accumulation_steps * processes
    if completions % g.num_generations:
        raise ConfigError(
            f"grpo: per_device_train_batch_size ({g.per_device_train_batch_size}) × "
            f"gradient_accumulation_steps ({g.gradient_accumulation_steps}) × processes "
            f"({processes}) = {completions} completions per step is not divisible by "
            f"num_generations ({g.num_generations})")
    needed = ["trl", "accelerate"] + (["peft"] if config.lora.enabled else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"training needs {', '.join(missing)}: pip install 'qbench[train]'")
    if g.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError("grpo.use_vllm: vllm is not installed here (pip install 'qbench[vllm]' "
                          "on the GPU machine), or set use_vllm: false")
    if config.lora.enabled and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise ConfigError("lora.enabled under DeepSpeed ZeRO-3: the adapter cannot be merged "
                          "from sharded weights; launch with accelerate_zero2.yaml or on one GPU")


def check_files(config: TrainConfig) -> None:
    """Every file the run needs exists (the images themselves are checked when the data is
    built). The message says what to put where."""
    model = config.model.path
    if not (model / "config.json").is_file():
        raise ConfigError(f"model.path {model}: no config.json there; put a local copy of "
                          f"Qwen2.5-VL-7B-Instruct (or a Q-Insight checkpoint) in that folder")
    for i, s in enumerate(config.data.score):
        if not s.folder.is_dir():
            raise ConfigError(f"data.score[{i}].folder {s.folder} is not a folder; put the "
                              f"{s.task} data there (images and labels)")
    for i, d in enumerate(config.data.degradation):
        if d.meta is not None and not d.meta.is_file():
            raise ConfigError(f"data.degradation[{i}].meta {d.meta} not found; put a DQ-495K/"
                              f"KADIS meta JSON there, or use `synthetic: <folder>`")
        if d.images is not None and not d.images.is_dir():
            raise ConfigError(f"data.degradation[{i}].images {d.images} is not a folder")
        missing = [str(p) for p in d.synthetic_photos if not p.is_file()]
        if missing:
            raise ConfigError(f"data.degradation[{i}].synthetic_photos not found: "
                              f"{', '.join(missing)}")
    for i, c in enumerate(config.data.comparison):
        if not c.pairs.is_file():
            raise ConfigError(f"data.comparison[{i}].pairs {c.pairs} not found; put the DiffIQA "
                              f"pair JSON ({{ref_image, ImageA, ImageB, result}} records) there")
        if c.images is not None and not c.images.is_dir():
            raise ConfigError(f"data.comparison[{i}].images {c.images} is not a folder")
    if config.resume not in ("auto", "never") and not Path(config.resume).is_dir():
        raise ConfigError(f"resume: checkpoint folder {config.resume} not found")
    root = config.eval.run_config().data_root
    if config.eval.every and root is not None and not Path(root).is_dir():
        raise ConfigError(f"eval.data_root {root} is not a folder")


def validate(config: TrainConfig, *, check_paths: bool = True,
             processes: int | None = None) -> None:
    check_settings(config, processes or world_size())
    if check_paths:
        check_files(config)
