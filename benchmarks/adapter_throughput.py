"""Throughput of the local VLM adapters at batch 1, 8 and 32 on the tiny random Qwen2.5-VL:
`qinsight` generation (greedy) and `qwen-vl-levels` level-token scoring, end to end through
`Model.predict` (prompt, processor, model, parsing). Prints samples/s and the ratio to batch 1,
all from one run.

    OMP_NUM_THREADS=1 python benchmarks/adapter_throughput.py [--device cpu|cuda]
        [--samples 64] [--max-new-tokens 16] [--batches 1 8 32]

The tiny model's weights are random: absolute figures say nothing about Q-Insight's speed;
the ratios show what batching buys on this machine for a small model.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from qbench import ModelConfig, Sample, create_model
from qbench.tiny import build_tiny_qwen2_5_vl


def photographs(n: int) -> list[list[Image.Image]]:
    """n crops of scikit-image's bundled photographs, 112x112 (the tiny model's pixel cap)."""
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        photo = sources[i % len(sources)]
        top = int(rng.integers(0, photo.shape[0] - 224))
        left = int(rng.integers(0, photo.shape[1] - 224))
        crop = Image.fromarray(photo[top:top + 224, left:left + 224]).resize((112, 112))
        out.append([crop])
    return out


def samples_per_second(model, samples: list[Sample], images, batch: int) -> float:
    model.predict(samples[:batch], images[:batch])  # warm-up: allocations, kernels
    start = time.perf_counter()
    for i in range(0, len(samples), batch):
        model.predict(samples[i:i + batch], images[i:i + batch])
    return len(samples) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    import torch
    print(f"device={args.device} torch_threads={torch.get_num_threads()} samples={args.samples} "
          f"max_new_tokens={args.max_new_tokens}")
    images = photographs(args.samples)
    samples = [Sample(id=str(i), task="bench", kind="score", images=("x.png",))
               for i in range(args.samples)]
    with tempfile.TemporaryDirectory() as folder:
        path = build_tiny_qwen2_5_vl(Path(folder) / "tiny")
        adapters = {
            "generation (qinsight)": create_model("qinsight", ModelConfig(
                model_path=path, device=args.device,
                options={"max_new_tokens": args.max_new_tokens})),
            "level tokens (qwen-vl-levels)": create_model("qwen-vl-levels", ModelConfig(
                model_path=path, device=args.device)),
        }
        baseline = f"vs batch {args.batches[0]}"
        print(f"{'adapter':<32}{'batch':>6}{'samples/s':>12}{baseline:>14}")
        for label, model in adapters.items():
            rates = [samples_per_second(model, samples, images, b) for b in args.batches]
            for batch, rate in zip(args.batches, rates):
                print(f"{label:<32}{batch:>6}{rate:>12.1f}{rate / rates[0]:>13.2f}x")
            model.close()


if __name__ == "__main__":
    main()
