"""Throughput of the local VLM adapters at batch 1, 8 and 32 on the tiny random Qwen2.5-VL:
`qinsight` generation (greedy) and `qwen-vl-levels` level-token scoring, end to end through
`Model.predict` (prompt, processor, model, parsing). Prints samples/s and the ratio to batch 1,
all from one run.

    OMP_NUM_THREADS=1 python benchmarks/adapter_throughput.py [--device cpu|cuda]
        [--samples 64] [--max-new-tokens 16] [--batches 1 8 32] [--repeats 3] [--profile]
    OMP_NUM_THREADS=1 python benchmarks/adapter_throughput.py --efficiency [--samples 512]
        [--repeats 5] [--efficiency-batch 32]

`--efficiency` measures only the level-token efficiency ratio (benchmarks/efficiency.py):
samples/s through `qwen-vl-levels` with images in and scores out, inputs built ahead as the
runner builds them, divided by samples/s of the bare forward pass on prebuilt inputs, at batch
32, best of interleaved passes. It prints `level-token efficiency ratio: X`.

`--profile` also splits level-token scoring into stages, milliseconds per sample at each batch
size: building the inputs through one processor call for the whole batch (how qbench did it
before) or through `InputBuilder` (image processor on every image, token ids once per prompt
and image grid), then the vision tower, the language model, the rest of the forward pass
(positions, embedding merge, head) and the softmax. Stages that stay flat in ms/sample as the
batch grows are what does not scale.

The tiny model's weights are random: absolute figures say nothing about Q-Insight's speed;
the ratios show what batching buys on this machine for a small model.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from efficiency import level_token_efficiency
from PIL import Image
from skimage import data

from qbench import ModelConfig, Sample, create_model
from qbench.backends.vlm import expected_level, model_inputs
from qbench.testing.tiny import build_tiny_qwen2_5_vl


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


def samples_per_second(model, samples: list[Sample], images, batch: int,
                       repeats: int) -> float:
    """The best of `repeats` passes over all samples (a shared machine slows some passes)."""
    model.predict(samples[:batch], images[:batch])  # warm-up: allocations, kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(samples), batch):
            model.predict(samples[i:i + batch], images[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return len(samples) / best


class StageClock:
    """Seconds spent in the vision tower and the language model, from forward hooks."""

    def __init__(self, network):
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}
        for name, module in (("vision", network.model.visual),
                             ("language", network.model.language_model)):
            module.register_forward_pre_hook(self._start(name))
            module.register_forward_hook(self._stop(name))

    def _start(self, name):
        def hook(*_):
            self._started[name] = time.perf_counter()
        return hook

    def _stop(self, name):
        def hook(*_):
            self.seconds[name] = self.seconds.get(name, 0.0) + \
                time.perf_counter() - self._started[name]
        return hook


def profile_levels(model, images, batches: list[int], repeats: int) -> None:
    """Per-stage ms/sample of level-token scoring; the best of `repeats` passes."""
    import torch
    network, processor, prompt = model.network, model.processor, model.prompt
    clock = StageClock(network)
    builders = {
        "processor call": lambda p, i: processor(text=p, images=[list(x) for x in i],
                                                 padding=True, return_tensors="pt"),
        "InputBuilder": lambda p, i: model_inputs(processor, p, i, network.device),
    }
    stages = ("inputs", "vision", "language", "forward rest", "softmax", "total")
    print(f"{'inputs built by':<16}{'batch':>6}" + "".join(f"{s:>14}" for s in stages)
          + "   (ms/sample)")
    totals: dict[tuple[str, int], float] = {}
    for label, build in builders.items():
        for batch in batches:
            best = None
            for _ in range(repeats + 1):  # the first pass warms up
                clock.seconds.clear()
                spent = dict.fromkeys(("inputs", "forward", "softmax"), 0.0)
                for i in range(0, len(images), batch):
                    chunk = images[i:i + batch]
                    start = time.perf_counter()
                    inputs = build([prompt] * len(chunk), chunk)
                    built = time.perf_counter()
                    with torch.inference_mode():
                        logits = network(**inputs, logits_to_keep=1,
                                         use_cache=False).logits[:, -1, :]
                    done = time.perf_counter()
                    expected_level(logits[:, model.token_ids], (5, 4, 3, 2, 1))
                    spent["inputs"] += built - start
                    spent["forward"] += done - built
                    spent["softmax"] += time.perf_counter() - done
                row = {"inputs": spent["inputs"], "vision": clock.seconds["vision"],
                       "language": clock.seconds["language"],
                       "forward rest": spent["forward"] - clock.seconds["vision"]
                       - clock.seconds["language"], "softmax": spent["softmax"]}
                row["total"] = sum(row.values())
                best = row if best is None or row["total"] < best["total"] else best
            per_sample = {k: 1000 * v / len(images) for k, v in best.items()}
            totals[label, batch] = per_sample["total"]
            print(f"{label:<16}{batch:>6}" + "".join(f"{per_sample[s]:>14.2f}" for s in stages))
    for label in builders:
        first, last = batches[0], batches[-1]
        print(f"level tokens, inputs by {label}: batch {last} vs {first} ratio "
              f"{totals[label, first] / totals[label, last]:.2f}")
    print(f"batch {batches[-1]}: InputBuilder vs processor call ratio "
          f"{totals['processor call', batches[-1]] / totals['InputBuilder', batches[-1]]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int,
                        help="images per pass (default 64; 512 with --efficiency)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int,
                        help="passes per measurement; the fastest counts (default 3; 5 with "
                             "--efficiency)")
    parser.add_argument("--profile", action="store_true",
                        help="also split level-token scoring into stages")
    parser.add_argument("--efficiency", action="store_true",
                        help="only the level-token efficiency ratio (adapter / bare forward)")
    parser.add_argument("--efficiency-batch", type=int, default=32)
    args = parser.parse_args()
    samples_n = args.samples or (512 if args.efficiency else 64)
    repeats = args.repeats or (5 if args.efficiency else 3)

    import torch
    print(f"device={args.device} torch_threads={torch.get_num_threads()} samples={samples_n} "
          f"max_new_tokens={args.max_new_tokens}")
    images = photographs(samples_n)
    samples = [Sample(id=str(i), task="bench", kind="score", images=("x.png",))
               for i in range(samples_n)]
    with tempfile.TemporaryDirectory() as folder:
        path = build_tiny_qwen2_5_vl(Path(folder) / "tiny")
        if args.efficiency:
            levels = create_model("qwen-vl-levels", ModelConfig(model_path=path,
                                                                device=args.device))
            sync = torch.cuda.synchronize if args.device.startswith("cuda") else lambda: None
            result = level_token_efficiency(levels, images, args.efficiency_batch, repeats, sync)
            print("\n".join(result.lines()))
            levels.close()
            return
        adapters = {
            "generation (qinsight)": create_model("qinsight", ModelConfig(
                model_path=path, device=args.device,
                options={"max_new_tokens": args.max_new_tokens, "decoding": "greedy"})),
            "level tokens (qwen-vl-levels)": create_model("qwen-vl-levels", ModelConfig(
                model_path=path, device=args.device)),
        }
        first = args.batches[0]
        print(f"{'adapter':<32}{'batch':>6}{'samples/s':>12}")
        for label, model in adapters.items():
            rates = [samples_per_second(model, samples, images, b, repeats)
                     for b in args.batches]
            for batch, rate in zip(args.batches, rates):
                print(f"{label:<32}{batch:>6}{rate:>12.1f}   ratio {rate / rates[0]:.2f} "
                      f"vs batch {first}")
        if args.profile:
            profile_levels(adapters["level tokens (qwen-vl-levels)"], images, args.batches,
                           repeats)
        for model in adapters.values():
            model.close()


if __name__ == "__main__":
    main()
