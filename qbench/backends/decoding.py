"""Decoding settings that mean the same on every backend: transformers `generate`, vLLM's
offline `SamplingParams` and an OpenAI-compatible request (`vllm serve`, SGLang, hosted APIs).

The backends disagree in three ways this module settles:
- A checkpoint's `generation_config.json` (Qwen2.5-VL-7B-Instruct's sets a repetition penalty)
  is applied by transformers and by `vllm serve` to whatever a request leaves unset, but not by
  offline vLLM once `SamplingParams` is given. qbench therefore resolves every value up front
  from the preset, the checkpoint's file and the user's options, sends all of them explicitly
  on every path, and records them with where each came from; decoding keys of the checkpoint
  that no path can carry are recorded as ignored.
- "top_k off" is 0 in transformers and must be -1 in vLLM 0.8 (which refuses 0).
- Ranges: vLLM 0.8 raises a temperature below 0.01 to 0.01 without failing and refuses a
  repetition penalty above 2; vLLM 0.33 and the OpenAI API refuse a temperature above 2.
  qbench accepts only what every backend takes as given.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from qbench.core.model import ModelError

TEMPERATURE_RANGE = (0.01, 2.0)        # sampling temperatures every backend takes as given
REPETITION_PENALTY_MAX = 2.0           # vLLM 0.8 refuses more
VLLM_TOP_K_OFF = -1                    # vLLM 0.8 refuses 0; later versions accept -1 too

# GenerationConfig() defaults of transformers 4.x for the values qbench carries. A script that
# passes its own GenerationConfig to `generate` (the Q-Insight demos) gets, under transformers
# 4.50 to 4.x, the checkpoint's value wherever its own equals one of these defaults - provided
# the checkpoint's generation_config.json was written by transformers >= 4.50.
TRANSFORMERS_4_DEFAULTS: dict[str, Any] = {"temperature": 1.0, "top_k": 50, "top_p": 1.0,
                                           "repetition_penalty": 1.0}
MERGES_DEFAULTS_FROM = "4.50.0"

# generation_config.json keys that change which tokens come out and that qbench does not send
# (with the value that makes them do nothing). A checkpoint setting one is run without it on
# every backend, and the key is recorded in the run manifest as ignored.
UNCARRIED_KEYS: dict[str, Any] = {
    "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0, "num_beams": 1,
    "min_length": 0, "min_new_tokens": None, "bad_words_ids": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "sequence_bias": None, "penalty_alpha": None, "diversity_penalty": 0.0,
}


@dataclass(frozen=True)
class Decoding:
    """Generation settings. `top_k` 0 is off. `samples` > 1 draws that many answers per image
    (sampling only). `seed` None: the run's --seed."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 1024
    samples: int = 1
    seed: int | None = None

    def check(self, model: str) -> Decoding:
        """Itself, or a one-line ModelError naming the value no backend would take as given."""
        low, high = TEMPERATURE_RANGE
        problems = []
        if self.samples < 1 or self.max_new_tokens < 1:
            problems.append("samples and max_new_tokens must be >= 1")
        if self.samples > 1 and not self.do_sample:
            problems.append(f"samples={self.samples} needs sampling (--model-arg decoding=demo "
                            "or do_sample=true): greedy answers repeat")
        if self.top_k < 0:
            problems.append(f"top_k={self.top_k}: must be >= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p={self.top_p}: must be in (0, 1]")
        if self.do_sample and not low <= self.temperature <= high:
            problems.append(f"temperature={self.temperature}: sampling needs {low} <= "
                            f"temperature <= {high} (vLLM 0.8 silently raises lower values to "
                            f"{low}; vLLM 0.33 and OpenAI APIs refuse more than {high})")
        if not (math.isfinite(self.repetition_penalty)
                and 0 < self.repetition_penalty <= REPETITION_PENALTY_MAX):
            problems.append(f"repetition_penalty={self.repetition_penalty}: must be in "
                            f"(0, {REPETITION_PENALTY_MAX}] (vLLM 0.8 refuses more)")
        if problems:
            raise ModelError(f"{model}: {'; '.join(problems)}")
        return self

    def settings(self) -> dict[str, Any]:
        """The values that shape the answers; sampling-only values are None when greedy."""
        values = asdict(self)
        if not self.do_sample:
            values.update(temperature=None, top_k=None, top_p=None)
        return values


@dataclass(frozen=True)
class DecodingPreset:
    """Named decoding values and where they come from (printed in the run manifest).
    `like_passed_generation_config`: the source passed these values as its own
    GenerationConfig, so the checkpoint fills the ones left at transformers' defaults (see
    TRANSFORMERS_4_DEFAULTS); otherwise only the checkpoint's repetition penalty applies, as
    transformers and `vllm serve` apply it to requests that do not set one."""

    decoding: Decoding
    source: str
    like_passed_generation_config: bool = False


@dataclass(frozen=True)
class CheckpointDefaults:
    """The decoding values of a checkpoint's generation_config.json that qbench carries, the
    transformers version that wrote it, and its decoding keys no backend path carries."""

    values: dict[str, Any] = field(default_factory=dict)
    written_by: str | None = None
    ignored: dict[str, Any] | None = None
    file: str | None = None

    def fills_passed_config(self) -> bool:
        from packaging.version import InvalidVersion, Version
        try:
            return Version(Version(self.written_by or "0").base_version) >= \
                Version(MERGES_DEFAULTS_FROM)
        except InvalidVersion:
            return False


def checkpoint_defaults(folder: Path | None) -> CheckpointDefaults:
    """The decoding values of `folder`/generation_config.json (nothing when there is none)."""
    if folder is None or not (Path(folder) / "generation_config.json").is_file():
        return CheckpointDefaults()
    file = Path(folder) / "generation_config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {file}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{file} is not a JSON object")
    ignored = {key: value for key, value in config.items()
               if key in UNCARRIED_KEYS and value != UNCARRIED_KEYS[key]}
    values = {key: config[key] for key in TRANSFORMERS_4_DEFAULTS if config.get(key) is not None}
    return CheckpointDefaults(values=values, written_by=config.get("transformers_version"),
                              ignored=ignored or None, file=str(file))


def choose_decoding(presets: Mapping[str, DecodingPreset], preset: str, model: str,
                    checkpoint: CheckpointDefaults, **overrides: Any
                    ) -> tuple[Decoding, dict[str, Any]]:
    """(decoding, provenance): the preset, then the checkpoint's values it would have received
    (see DecodingPreset), then the options the user set explicitly (None = not set)."""
    if preset not in presets:
        raise ModelError(f"{model}: unknown decoding preset {preset!r}; "
                         f"known: {', '.join(presets)}")
    chosen = presets[preset]
    if chosen.like_passed_generation_config:
        inherited = {key: value for key, value in checkpoint.values.items()
                     if checkpoint.fills_passed_config()
                     and getattr(chosen.decoding, key) == TRANSFORMERS_4_DEFAULTS[key]
                     and value != TRANSFORMERS_4_DEFAULTS[key]}
    else:
        inherited = {key: value for key, value in checkpoint.values.items()
                     if key == "repetition_penalty"}
    explicit = {k: v for k, v in overrides.items() if v is not None}
    inherited = {k: v for k, v in inherited.items() if k not in explicit}
    decoding = replace(chosen.decoding, **inherited, **explicit)
    provenance: dict[str, Any] = {"preset": preset, "source": chosen.source,
                                  "from_checkpoint": inherited or None,
                                  "checkpoint_file": checkpoint.file,
                                  "changed_by_model_args": sorted(explicit) or None}
    if checkpoint.ignored:
        provenance["ignored_generation_config"] = checkpoint.ignored
    try:
        return decoding.check(model), provenance
    except ModelError as exc:
        if not inherited:
            raise
        raise ModelError(f"{exc} (taken from {checkpoint.file}: {inherited}; set the value "
                         "with --model-arg)") from None


def vllm_sampling_kwargs(decoding: Decoding, seed: int) -> dict[str, Any]:
    """`vllm.SamplingParams` arguments with the meaning transformers gives `decoding`; valid
    under vLLM 0.8 and 0.33 alike."""
    kwargs: dict[str, Any] = {"n": decoding.samples, "max_tokens": decoding.max_new_tokens,
                              "seed": seed, "repetition_penalty": decoding.repetition_penalty}
    if decoding.do_sample:
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p,
                      top_k=decoding.top_k or VLLM_TOP_K_OFF)
    else:  # temperature 0 is vLLM's greedy decoding
        kwargs.update(temperature=0.0, top_p=1.0, top_k=VLLM_TOP_K_OFF)
    return kwargs


def openai_sampling_fields(decoding: Decoding, seed: int, extensions: bool) -> dict[str, Any]:
    """Chat-completions request fields. `extensions`: also top_k and repetition_penalty, which
    vLLM and SGLang accept and the OpenAI API does not."""
    fields = vllm_sampling_kwargs(decoding, seed)
    if not extensions:
        del fields["top_k"], fields["repetition_penalty"]
    return fields
