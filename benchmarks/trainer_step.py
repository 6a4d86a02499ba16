"""Seconds per GRPO step and peak memory of the trainer on the tiny random Qwen2.5-VL, without a
reference model (β = 0) and with one (β = 1e-3, the recipe), on the CPU and, where one is
present, on CUDA. Each setting runs in its own process so that peak memory is its own.

    OMP_NUM_THREADS=1 python benchmarks/trainer_step.py [--steps 12] [--repeats 2]
        [--devices cpu,cuda]

Per step: one prompt, N = 4 completions of 32 tokens, the recipe's rewards plus a test reward
with variance (a random model never earns the recipe's). The first step (warm-up) is not
timed; the median (and quartiles) of the rest over all runs is reported. Peak memory: resident
set of the process on the CPU (the Python runtime and libraries included), max allocated by
torch on CUDA.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BETAS = (0.0, 1e-3)


def even_token_share(completion_ids, **_):
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def step_timer(times: list[float]):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    return StepTimer()


def worker(beta: float, device: str, steps: int, work: Path) -> dict:
    """One training run; returns its timing and memory."""
    import torch

    from qbench.tasks.synthetic import FIT_PHOTOS, bundled_photo
    from qbench.testing.tiny import build_tiny_qwen2_5_vl
    from qbench.trainer.config import (
        DataSettings,
        DegradationSource,
        GRPOSettings,
        ModelSettings,
        TrainConfig,
    )
    from qbench.trainer.train import train

    torch.set_num_threads(1)
    model = build_tiny_qwen2_5_vl(work / "tiny")
    config = TrainConfig(
        model=ModelSettings(path=model, dtype="float32", min_pixels=None, max_pixels=None),
        output_dir=work / f"run-{device}-{beta}", resume="never",
        data=DataSettings(degradation=[DegradationSource(
            synthetic=work / "synthetic", synthetic_photos=[bundled_photo(*FIT_PHOTOS[0])],
            synthetic_crops_per_photo=1)]),
        grpo=GRPOSettings(num_generations=4, per_device_train_batch_size=4,
                          gradient_accumulation_steps=1, max_steps=steps,
                          save_steps=10 * steps, max_completion_length=32, beta=beta,
                          bf16=False, gradient_checkpointing=False, use_cpu=device == "cpu",
                          report_to="none"))
    times: list[float] = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train(config, extra_rewards=[(even_token_share, 1.0)], callbacks=[step_timer(times)])
    timed = times[1:]  # the first step pays for lazy initialisation
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"step_s": timed, "peak_mb": peak_mb}


def run_isolated(beta: float, device: str, steps: int, work: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", "--beta", str(beta),
                          "--devices", device, "--steps", str(steps), "--work", str(work)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"benchmark run beta={beta} on {device} failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting, interleaved")
    parser.add_argument("--devices", default=None,
                        help="cpu,cuda (default: cpu, and cuda if present)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--beta", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    if args.worker:
        print(json.dumps(worker(args.beta, args.devices, args.steps, args.work)))
        return
    import torch
    devices = args.devices.split(",") if args.devices else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            work = Path(tmp) / device
            work.mkdir()
            step_s: dict[float, list[float]] = {beta: [] for beta in BETAS}
            peak_mb: dict[float, float] = {beta: 0.0 for beta in BETAS}
            for repeat in range(args.repeats):
                # alternate the order so that drift on a shared machine hits both settings
                for beta in BETAS if repeat % 2 == 0 else BETAS[::-1]:
                    run = run_isolated(beta, device, args.steps, work)
                    step_s[beta] += run["step_s"]
                    peak_mb[beta] = max(peak_mb[beta], run["peak_mb"])
            memory = "peak RSS" if device == "cpu" else "peak allocated"
            print(f"{device}: tiny Qwen2.5-VL, N=4, 32-token completions, {args.repeats} runs "
                  f"x {args.steps - 1} timed steps per setting")
            for beta in BETAS:
                q1, median, q3 = statistics.quantiles(step_s[beta], n=4)
                print(f"  beta={beta:<6g} {median:.3f} s/step (quartiles {q1:.3f}-{q3:.3f})   "
                      f"{memory} {peak_mb[beta]:.1f} MiB")
            without, with_ref = BETAS
            time_ratio = statistics.median(step_s[with_ref]) / statistics.median(step_s[without])
            print(f"  reference model (beta 1e-3 vs 0): time x{time_ratio:.2f}, "
                  f"memory x{peak_mb[with_ref] / peak_mb[without]:.3f}")


if __name__ == "__main__":
    main()
