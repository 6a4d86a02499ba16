"""The training configuration: dataclasses filled from a YAML file and checked before anything
heavy (torch, TRL, the model) loads, so a typo or a missing path costs seconds, not a job slot.

Defaults are the Q-Insight recipe (REFERENCE §1). Relative paths are taken from the current
directory. Every problem is a `ConfigError` whose message is one line naming the key.
"""
from __future__ import annotations

import importlib.util
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

# The released Qwen2.5-VL limits on image size (pixels); Q-Insight trained with them.
MIN_PIXELS = 3136
MAX_PIXELS = 12845056
DTYPES = ("bfloat16", "float16", "float32")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
VLLM_MODES = ("colocate", "server")
# LoRA on the language model only: the vision tower's MLP reuses the names gate/up/down_proj.
LANGUAGE_MODEL_LINEAR = (r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj"
                         r"|down_proj)")


class ConfigError(ValueError):
    """A training configuration that cannot run; one line naming the key and the fix."""


@dataclass
class ModelSettings:
    path: Path
    dtype: str = "bfloat16"
    attn_implementation: str | None = None   # None: transformers' default (sdpa)
    min_pixels: int | None = MIN_PIXELS       # None: keep the checkpoint processor's setting
    max_pixels: int | None = MAX_PIXELS


@dataclass
class ScoreSource:
    """Score samples from a registered score task (KonIQ train split by default)."""
    folder: Path
    task: str = "koniq"
    split: str = "train"


@dataclass
class DegradationSource:
    """Degradation samples: a DQ-495K / KADIS-style meta JSON (`meta`, image paths relative to
    `images`, default the meta's folder), or qbench's synthetic generator writing into
    `synthetic` (from `synthetic_photos`, default the photographs bundled with scikit-image that
    the demo test set does not use)."""
    meta: Path | None = None
    images: Path | None = None
    synthetic: Path | None = None
    synthetic_photos: list[Path] = field(default_factory=list)
    synthetic_seed: int = 0
    synthetic_crops_per_photo: int = 2


@dataclass
class ComparisonSource:
    """DiffIQA pairs: a JSON list of {ref_image, ImageA, ImageB, result}, image paths relative to
    `images` (default the JSON's folder)."""
    pairs: Path
    images: Path | None = None


@dataclass
class DataSettings:
    score: list[ScoreSource] = field(default_factory=list)
    degradation: list[DegradationSource] = field(default_factory=list)
    comparison: list[ComparisonSource] = field(default_factory=list)
    seed: int = 42           # the mix is shuffled with it
    image_first: bool = True  # Q-Insight training puts the image before the question
    limit: int | None = None  # keep the first `limit` samples of the shuffled mix (smoke runs)


@dataclass
class RewardSettings:
    format_strict: bool = False  # True: the released regex with newlines around every tag
    score_epsilon: float = 0.35
    format_weight: float = 1.0
    score_weight: float = 1.0
    class_weight: float = 0.25   # α1
    level_weight: float = 0.75   # α2
    comparison_weight: float = 1.0


@dataclass
class GRPOSettings:
    """The GRPOConfig fields the recipe sets; `extra` passes any other GRPOConfig field on."""
    num_generations: int = 8
    beta: float = 1e-3
    epsilon: float = 0.2
    loss_type: str = "grpo"
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "linear"
    num_train_epochs: float = 10.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    temperature: float = 1.0
    max_completion_length: int = 256
    bf16: bool = True
    gradient_checkpointing: bool = True
    logging_steps: int = 1
    save_steps: int = 200
    save_total_limit: int | None = None
    seed: int = 42
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_server_base_url: str | None = None
    report_to: str = "none"
    use_cpu: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: str = LANGUAGE_MODEL_LINEAR


@dataclass
class EvalSettings:
    """Evaluate every `every` steps (a multiple of save_steps: it evaluates the checkpoint just
    written) through `qbench run`; 0 turns it off."""
    every: int = 0
    tasks: list[str] = field(default_factory=lambda: ["koniq"])
    data_root: Path | None = None
    data: dict[str, Path] = field(default_factory=dict)   # per-task folder overrides
    split: str | None = None
    limit: int | None = 200
    batch_size: int = 8
    device: str = "auto"
    model: str = "qinsight"
    model_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: ModelSettings
    output_dir: Path
    data: DataSettings = field(default_factory=DataSettings)
    rewards: RewardSettings = field(default_factory=RewardSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    resume: str = "auto"  # "auto": the last checkpoint in output_dir if any; "never"; or a path

    def kinds(self) -> list[str]:
        sources = {"score": self.data.score, "degradation": self.data.degradation,
                   "comparison": self.data.comparison}
        return [kind for kind, listed in sources.items() if listed]


# ------------------------------------------------------------------------------ YAML → dataclass

def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check and convert one YAML value to the annotated type (the few forms used above)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where)
    if origin is list:
        if not isinstance(value, list):
            value = [value]  # one source may be written without the list dashes
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if is_dataclass(hint):
        return from_mapping(hint, value, where)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        # PyYAML reads 1e-6 (no dot) as a string; accept any number written out
        try:
            number = hint(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (hint is int and isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected {'an integer' if hint is int else 'a number'}, "
                              f"got {value!r}")
        return number
    if hint in (str, Path):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return Path(str(value)).expanduser() if hint is Path else str(value)
    raise TypeError(f"unsupported annotation {hint!r} at {where}")


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, naming unknown and missing keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(known)}")
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{where}.{name}" if where else name)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{where + '.' if where else ''}{name} is required")
    return cls(**values)


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
        node[key] = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {dotted}: cannot read value {text!r}") from None


def load_config(path: Path, *, overrides: dict[str, str] | None = None,
                check_paths: bool = True) -> TrainConfig:
    """Read a training YAML file, apply `overrides` (dotted key → YAML text), convert and
    validate."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        if overrides:
            if not isinstance(data, dict):
                raise ConfigError("expected a mapping of settings at the top")
            for dotted, text in overrides.items():
                set_value(data, dotted, text)
        config = from_mapping(TrainConfig, data, "")
        validate(config, check_paths=check_paths)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


# ------------------------------------------------------------------------------ validation

def world_size() -> int:
    """Processes taking part (accelerate launch and torchrun set WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_settings(config: TrainConfig, processes: int) -> None:
    """Values that TRL would reject later, or that cannot mean what the user wants."""
    g = config.grpo
    if g.num_generations < 2:
        raise ConfigError(f"grpo.num_generations must be at least 2 (a group needs a spread), "
                          f"got {g.num_generations}")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps",
                 "max_completion_length", "logging_steps"):
        if getattr(g, name) < 1:
            raise ConfigError(f"grpo.{name} must be positive, got {getattr(g, name)}")
    completions = g.per_device_train_batch_size * g.gradient_accumulation_steps * processes
    if completions % g.num_generations:
        raise ConfigError(
            f"grpo: per_device_train_batch_size ({g.per_device_train_batch_size}) × "
            f"gradient_accumulation_steps ({g.gradient_accumulation_steps}) × processes "
            f"({processes}) = {completions} completions per step is not divisible by "
            f"num_generations ({g.num_generations})")
    if g.beta < 0 or g.epsilon <= 0 or g.temperature <= 0 or g.learning_rate <= 0:
        raise ConfigError("grpo: beta must be >= 0; epsilon, temperature and learning_rate > 0")
    if g.loss_type not in LOSS_TYPES:
        raise ConfigError(f"grpo.loss_type {g.loss_type!r} not one of {', '.join(LOSS_TYPES)}")
    needed = ["trl", "accelerate"] + (["peft"] if config.lora.enabled else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"training needs {', '.join(missing)}: pip install 'qbench[train]'")
    if g.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError("grpo.use_vllm: vllm is not installed here (pip install 'qbench[vllm]' "
                          "on the GPU machine), or set use_vllm: false")
    if g.vllm_mode not in VLLM_MODES:
        raise ConfigError(f"grpo.vllm_mode {g.vllm_mode!r} not one of {', '.join(VLLM_MODES)}")
    if g.max_steps <= 0 and g.num_train_epochs <= 0:
        raise ConfigError("grpo: set max_steps > 0 or num_train_epochs > 0")
    if config.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype {config.model.dtype!r} not one of {', '.join(DTYPES)}")
    r = config.rewards
    if r.score_epsilon <= 0:
        raise ConfigError(f"rewards.score_epsilon must be positive, got {r.score_epsilon}")
    if not config.kinds():
        raise ConfigError("data: no sources; give at least one of data.score, "
                          "data.degradation, data.comparison")
    for i, source in enumerate(config.data.degradation):
        if (source.meta is None) == (source.synthetic is None):
            raise ConfigError(f"data.degradation[{i}]: give exactly one of meta (a DQ-style meta "
                              f"JSON) or synthetic (a folder to generate into)")
    e = config.eval
    if e.every < 0 or (e.every and e.every % g.save_steps):
        raise ConfigError(f"eval.every ({e.every}) must be 0 or a multiple of grpo.save_steps "
                          f"({g.save_steps}): it evaluates the checkpoint just saved")
    if config.lora.enabled and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise ConfigError("lora.enabled under DeepSpeed ZeRO-3: the adapter cannot be merged "
                          "from sharded weights; launch with accelerate_zero2.yaml or on one GPU")
    if e.every and config.lora.enabled:
        raise ConfigError("eval.every with lora.enabled: checkpoints hold only the adapter; "
                          "evaluate the merged final model (output_dir/final) instead")
    if config.resume not in ("auto", "never") and not config.resume.strip():
        raise ConfigError("resume must be auto, never or a checkpoint folder")


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
    root = config.eval.data_root
    if config.eval.every and root is not None and not root.is_dir():
        raise ConfigError(f"eval.data_root {root} is not a folder")


def validate(config: TrainConfig, *, check_paths: bool = True,
             processes: int | None = None) -> None:
    check_settings(config, processes or world_size())
    if check_paths:
        check_files(config)
