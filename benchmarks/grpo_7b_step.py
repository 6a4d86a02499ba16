"""GRPO steps of the Qwen2.5-VL-7B architecture with LoRA through qbench's trainer on one GPU:
seconds per step and peak GPU memory. Prepared to fit in 8 minutes on an H100/H200.

The model has Qwen2.5-VL-7B-Instruct's sizes (its config.json; nothing downloaded) and random
bf16 weights built on the GPU, written once to a temporary folder (about 16 GB) so that the
trainer loads it as it loads any checkpoint. qbench's tiny trained tokenizer stands in for
Qwen's: prompts are a little shorter in text, the image tokens (about 1,000 for KonIQ's
1024x768) are the same. Each step is what one GPU does in the recipe: one degradation prompt,
N = 8 completions of 256 tokens (random weights never stop early), LoRA r 64 on the language
model, β = 1e-3 (the reference is the base model with the adapter off), gradient checkpointing,
bf16. Random weights earn no recipe reward, so a test reward with variance (the share of even
token ids) is added, as in trainer_step.py: the update is then a real one. The first step pays
for lazy initialisation and is reported apart; output_dir/final (a merged 16 GB copy) is not
written.

    python benchmarks/grpo_7b_step.py [--steps 3]                     # one H100/H200
    OMP_NUM_THREADS=1 python benchmarks/grpo_7b_step.py --dry-run     # tiny model, CPU

The GPU machine has torch, transformers, accelerate and peft but no internet: trl and datasets
travel as wheels, with those of datasets' dependencies it lacks (pyarrow, dill, multiprocess,
xxhash, fsspec are the usual ones), and qbench's own core dependencies (pydantic among them)
must be importable there too:
    here:   pip download --no-deps -d wheels trl==1.16.0 datasets==5.2.0 pyarrow dill \\
                multiprocess xxhash fsspec
    there:  pip install --no-deps wheels/*.whl && python benchmarks/grpo_7b_step.py
A checkout that is not installed is importable as it stands (gpu_throughput.py's
`import_qbench_from_checkout`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import (  # noqa: E402
    QWEN2_5_VL_7B_TEXT,
    QWEN2_5_VL_7B_VISION,
    QWEN2_5_VL_MAX_PIXELS,
    import_qbench_from_checkout,
)
from trainer_step import even_token_share, step_timer  # noqa: E402


@dataclass(frozen=True)
class Plan:
    device: str
    tiny: bool
    steps: int
    completion_tokens: int
    lora_r: int


def gpu_plan(steps: int) -> Plan:
    return Plan(device="cuda", tiny=False, steps=steps, completion_tokens=256, lora_r=64)


def dry_run_plan() -> Plan:
    return Plan(device="cpu", tiny=True, steps=2, completion_tokens=8, lora_r=4)


def write_checkpoint(plan: Plan, folder: Path) -> Path:
    """A loadable checkpoint of random weights: the 7B sizes built on the GPU in bf16, or the
    tiny model for a dry run."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from qbench.testing.tiny import (
        ROPE_THETA,
        build_tiny_qwen2_5_vl,
        qwen2_5_vl_config,
        tiny_processor,
    )
    if plan.tiny:
        return build_tiny_qwen2_5_vl(folder)
    processor = tiny_processor(max_pixels=QWEN2_5_VL_MAX_PIXELS)
    tokenizer = processor.tokenizer
    config = qwen2_5_vl_config(tokenizer, text=dict(QWEN2_5_VL_7B_TEXT),
                               vision=QWEN2_5_VL_7B_VISION, rope_theta=ROPE_THETA)
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(plan.device):
            network = Qwen2_5_VLForConditionalGeneration._from_config(config)
    finally:
        torch.set_default_dtype(default_dtype)
    network.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                                 pad_token_id=tokenizer.pad_token_id)
    network.save_pretrained(folder)
    processor.save_pretrained(folder)
    del network
    torch.cuda.empty_cache()
    return folder


def write_data(folder: Path) -> Path:
    """One degradation sample on a 1024x768 image (KonIQ's size), as a DQ-style meta."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 220, 1024)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 20, (768, 1024, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "lq.png")
    meta = folder / "train.json"
    meta.write_text(json.dumps([{"img_lq": "lq.png", "distortion_class": "noise",
                                 "severity": 2}]))
    return meta


def train_config(plan: Plan, model: Path, meta: Path, output_dir: Path):
    from qbench.trainer.config import (
        DataSettings,
        DegradationSource,
        GRPOSettings,
        LoraSettings,
        ModelSettings,
        TrainConfig,
    )
    gpu = not plan.tiny
    return TrainConfig(
        model=ModelSettings(path=model, dtype="bfloat16" if gpu else "float32",
                            attn_implementation="sdpa",
                            max_pixels=QWEN2_5_VL_MAX_PIXELS if gpu else None),
        output_dir=output_dir, resume="never",
        data=DataSettings(degradation=[DegradationSource(meta=meta)]),
        grpo=GRPOSettings(num_generations=8, per_device_train_batch_size=8,
                          gradient_accumulation_steps=1, max_steps=plan.steps,
                          save_steps=10 * plan.steps,
                          max_completion_length=plan.completion_tokens, bf16=gpu,
                          gradient_checkpointing=True, use_cpu=not gpu),
        lora=LoraSettings(enabled=True, r=plan.lora_r, alpha=2 * plan.lora_r))


def run(plan: Plan, work: Path) -> tuple[list[float], float | None]:
    """Step times (seconds) and peak GPU memory (GiB; None on the CPU)."""
    import torch

    from qbench.trainer.train import train
    if plan.tiny:
        torch.set_num_threads(1)
    model = write_checkpoint(plan, work / "model")
    config = train_config(plan, model, write_data(work / "data"), work / "run")
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    train(config, extra_rewards=[(even_token_share, 1.0)], callbacks=[step_timer(times)],
          save_final_model=False)
    peak = torch.cuda.max_memory_allocated() / 2**30 if plan.device == "cuda" else None
    return times, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code on the tiny random model on the CPU")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps (the first is warm-up)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is reported apart)")
    import_qbench_from_checkout()
    import torch
    plan = dry_run_plan() if args.dry_run else gpu_plan(args.steps)
    if plan.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --dry-run on a CPU")
    what = "tiny Qwen2.5-VL (dry run)" if plan.tiny else "Qwen2.5-VL-7B sizes, random bf16"
    print(f"{what}: LoRA r {plan.lora_r}, N = 8 completions of {plan.completion_tokens} "
          f"tokens per step, beta 1e-3, {plan.steps} steps on {plan.device}", flush=True)
    with tempfile.TemporaryDirectory(prefix="grpo-7b-step-") as tmp:
        times, peak = run(plan, Path(tmp))
    if len(times) != plan.steps:
        raise SystemExit(f"expected {plan.steps} timed steps, got {len(times)}")
    first, rest = times[0], times[1:]
    print(f"first step (warm-up included): {first:.2f} s")
    print(f"seconds per step: median {statistics.median(rest):.2f} over {len(rest)} steps "
          f"({', '.join(f'{t:.2f}' for t in rest)})")
    print(f"peak GPU memory: {peak:.1f} GiB" if peak is not None
          else "peak GPU memory: n/a (CPU dry run)")


if __name__ == "__main__":
    main()
