"""GRPO training through TRL's GRPOTrainer with the Q-Insight recipe.

Order of work: the config is checked and the data mix built (every image decoded) before the
model loads. Checkpoints (`output_dir/checkpoint-N`) hold the model and its processor, so
`qbench run --model qinsight --model-path output_dir/checkpoint-N` evaluates any of them; the
finished model is written to `output_dir/final` (LoRA adapters merged into it).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from qbench.core import provenance as mf
from qbench.core.files import write_json
from qbench.trainer.config import ConfigError, EvalSettings, ModelSettings, TrainConfig, validate
from qbench.trainer.data import TrainingData, prepare_data, to_dataset
from qbench.trainer.rewards import reward_functions

FINAL = "final"


@dataclass
class TrainResult:
    output_dir: Path
    final_model: Path | None   # None when the run was asked not to save it
    global_step: int
    resumed_from: Path | None
    log_history: list[dict[str, Any]]


# ------------------------------------------------------------------------------ pieces

def load_training_processor(settings: ModelSettings):
    """The base model's processor (the harness's loader: left padding, type checked), with the
    recipe's image-size limits, which are saved with every checkpoint."""
    from transformers.image_processing_utils import SizeDict

    from qbench.backends.vlm import load_processor
    processor = load_processor(settings.path, "train")
    size = processor.image_processor.size
    if settings.min_pixels is not None or settings.max_pixels is not None:
        processor.image_processor.size = SizeDict(
            shortest_edge=settings.min_pixels or size.shortest_edge,
            longest_edge=settings.max_pixels or size.longest_edge)
    return processor


def trainer_fields(config: TrainConfig, reward_weights: Sequence[float]) -> dict[str, Any]:
    """The GRPOConfig fields the trainer sets itself (config.TRAINER_FIELDS names them, so that
    validation keeps them out of grpo.extra)."""
    init = {"dtype": config.model.dtype}
    if config.model.attn_implementation:
        init["attn_implementation"] = config.model.attn_implementation
    return {"output_dir": str(config.output_dir), "save_strategy": "steps",
            "logging_strategy": "steps",
            "remove_unused_columns": False,  # the ground-truth columns must reach the rewards
            "reward_weights": list(reward_weights), "model_init_kwargs": init}


def grpo_arguments(config: TrainConfig, reward_weights: Sequence[float]):  # -> trl.GRPOConfig
    """GRPOConfig from the recipe settings, plus `grpo.extra` for any other GRPOConfig field."""
    from trl import GRPOConfig

    # The config checked `extra` against TRL 1.16's field names; another TRL is checked here.
    unknown = sorted(set(config.grpo.extra) - {f.name for f in dataclasses.fields(GRPOConfig)})
    if unknown:
        raise ConfigError(f"grpo.extra: {', '.join(unknown)} not GRPOConfig fields in the "
                          f"installed TRL")
    return GRPOConfig(**trainer_fields(config, reward_weights),
                      **config.grpo.model_dump(exclude={"extra"}), **config.grpo.extra)


def lora_config(config: TrainConfig):  # -> peft.LoraConfig | None
    if not config.lora.enabled:
        return None
    from peft import LoraConfig
    lora = config.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def resume_checkpoint(config: TrainConfig) -> Path | None:
    """The checkpoint to continue from: "auto" → the newest in output_dir (None when there is
    none), "never" → None, else the folder given."""
    if config.resume == "never":
        return None
    if config.resume != "auto":
        return Path(config.resume)
    from transformers.trainer_utils import get_last_checkpoint
    last = get_last_checkpoint(str(config.output_dir)) if config.output_dir.is_dir() else None
    return Path(last) if last else None


def evaluate_checkpoint(checkpoint: Path, settings: EvalSettings, output_dir: Path,
                        run_name: str) -> dict[str, Any]:
    """Run the harness on a checkpoint: every number it reports, keyed eval/<task>/<metric>,
    and the reason of any task it skipped."""
    from qbench.run.runner import run
    result = run(settings.run_config(model_path=checkpoint, output_dir=output_dir,
                                     run_name=run_name))
    found: dict[str, Any] = {}
    for outcome in result.outcomes:
        if outcome.metrics is None:
            found[f"eval/{outcome.task}/skipped"] = outcome.skipped
            continue
        for key, value in outcome.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[f"eval/{outcome.task}/{key}"] = float(value)
    return found


def harness_callback(settings: EvalSettings, output_dir: Path,
                     console: Console):  # -> TrainerCallback
    """Evaluates each checkpoint whose step is a multiple of `settings.every`, on the main
    process, through `qbench run`; the numbers join the training log and eval/history.jsonl.
    A failed evaluation is recorded there and training goes on: it must not cost the run."""
    from transformers import TrainerCallback

    class HarnessEvaluation(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step % settings.every or not state.is_world_process_zero:
                return
            step = state.global_step
            try:
                found = evaluate_checkpoint(output_dir / f"checkpoint-{step}", settings,
                                            output_dir / "eval", f"step-{step}")
            except Exception as exc:  # reported below; training continues
                found = {"eval/error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            problems = {k: v for k, v in found.items() if isinstance(v, str)}
            for key, why in problems.items():
                console.print(f"[yellow]step {step} evaluation: {key}: {why}[/]", soft_wrap=True)
            state.log_history.append({"step": step, **found})
            (output_dir / "eval").mkdir(parents=True, exist_ok=True)
            with (output_dir / "eval" / "history.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **found}) + "\n")

    return HarnessEvaluation()


def grpo_trainer_class():  # -> type[trl.GRPOTrainer]
    from trl import GRPOTrainer

    class QInsightGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose resume reads the policy weights through `from_pretrained`.
        transformers writes Qwen2.5-VL checkpoints under the released key names (visual.*,
        model.layers.*) while the live model names them model.visual.*,
        model.language_model.*; Trainer's own resume loads the file raw, matches no key and
        silently keeps the weights it started with (reported as ms-swift issue 7947).
        DeepSpeed, FSDP and LoRA resumes take their own paths and are left to Trainer."""

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            model = model if model is not None else self.model
            if hasattr(model, "peft_config") or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            saved = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype,
                                                device_map=None)
            model.load_state_dict(saved.state_dict(), strict=True)

    return QInsightGRPOTrainer


def write_run_record(config: TrainConfig, data: TrainingData) -> None:
    """output_dir/train_config.json: the resolved settings, the data mix and versions."""
    write_json(config.output_dir / "train_config.json", {
        "config": config.model_dump(mode="json"), "samples": data.counts(), "notes": data.notes,
        "problems": data.problems,
        "versions": mf.package_versions(), "git_commit": mf.git_commit()})


def save_final(trainer, processor, config: TrainConfig) -> Path:
    """The finished model as one loadable folder (LoRA merged into the base weights)."""
    final = config.output_dir / FINAL
    if config.lora.enabled:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(final)
            processor.save_pretrained(final)
    else:
        trainer.save_model(str(final))  # gathers ZeRO-3 shards; writes the processor too
    return final


# ------------------------------------------------------------------------------ the run

def train(config: TrainConfig, *, console: Console | None = None,
          extra_rewards: Sequence[tuple[Callable[..., list], float]] = (),
          callbacks: Sequence[Any] = (), save_final_model: bool = True) -> TrainResult:
    """Train as configured. `extra_rewards` adds (reward function, weight) pairs to the
    recipe's (tests use one with variance on a random model); `callbacks` are TrainerCallbacks;
    `save_final_model=False` skips writing output_dir/final (a timing run of a 7B model)."""
    console = console or Console(stderr=True)
    validate(config)
    funcs, weights = reward_functions(config.rewards, config.kinds())
    funcs += [f for f, _ in extra_rewards]
    args = grpo_arguments(config, weights + [w for _, w in extra_rewards])
    # the main process first: it generates the synthetic set, if one is configured, alone
    with args.main_process_first(local=False, desc="reading and checking the training data"):
        data = prepare_data(config, console)
    console.print(f"training mix: {data.mix()}")
    processor = load_training_processor(config.model)

    hooks = list(callbacks)
    if config.eval.every:
        hooks.append(harness_callback(config.eval, config.output_dir, console))
    trainer_class = grpo_trainer_class()
    trainer = trainer_class(model=str(config.model.path), reward_funcs=funcs, args=args,
                            train_dataset=to_dataset(data.samples, config.data.image_first),
                            processing_class=processor, peft_config=lora_config(config),
                            callbacks=hooks)
    resumed = resume_checkpoint(config)
    if resumed is not None:
        console.print(f"resuming from {resumed}", soft_wrap=True)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    if trainer.accelerator.is_main_process:
        write_run_record(config, data)
    trainer.train(resume_from_checkpoint=str(resumed) if resumed else None)
    final = save_final(trainer, processor, config) if save_final_model else None
    return TrainResult(config.output_dir, final, trainer.state.global_step, resumed,
                       list(trainer.state.log_history))
