"""Level-token throughput of qbench's mPLUG-Owl2 at the size of the released Q-Align and
DeQA-Score models (LLaMA-2 7B decoder with modality-adaptive modules, ViT-L/14 at 448 px, 64
abstractor queries), random weights, one GPU: batch 1 against batch 16 in images/s and peak
memory, and how far batched half-precision logits stand from one-at-a-time ones.

    python benchmarks/owl2_gpu_throughput.py                     # CUDA, float16 (about a minute)
    python benchmarks/owl2_gpu_throughput.py --dtype bfloat16 --images 512
    OMP_NUM_THREADS=1 python benchmarks/owl2_gpu_throughput.py --dry-run   # tiny model, CPU

Needs torch, numpy and Pillow only: it loads baselines/mplug_owl2.py by its path, so a
checkout is enough (or `pip install --no-deps -e .`); nothing is downloaded. The weights are
random, so the figures say how fast and how large, not how good. The prompt is random ids of the
length the LLaMA-2 tokenizer gives the evaluation prompt (15 ids with BOS before the image, 12
after; the image adds 65), and the pixels are random tensors already preprocessed: this times
the network. A last line times the CPU side qbench runs ahead on a worker thread (the CLIP
preprocessing of a 1024x768 image to 448 px, as `qalign` does it) against the forward pass per
image at the larger batch: while it is the smaller, building inputs ahead hides it.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PREFIX_IDS, SUFFIX_IDS = 15, 12


def load_architecture():
    spec = importlib.util.spec_from_file_location("qbench_mplug_owl2",
                                                  ROOT / "baselines" / "mplug_owl2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(net, pixels, prompt, vocab_ids, batch: int, device: str) -> tuple[float, float]:
    """(images per second, peak GPU memory in GiB; 0 on the CPU) over all of `pixels`."""
    net.next_token_logits(pixels[:batch], prompt, vocab_ids)  # warm-up: kernels, allocator
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        net.next_token_logits(pixels[i:i + batch], prompt, vocab_ids)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0
    return len(pixels) / seconds, peak


def pixel_preparation_ms(owl2, side: int, threads: int, images: int = 8) -> float:
    """Best of 3 passes, ms per image, of the qalign adapter's CPU side on KonIQ-sized images:
    pad to a square of the mean colour, PIL bicubic to `side`, normalise (Owl2ImageProcessor),
    the batch shared among `threads` threads as the adapter shares it."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image
    processor = owl2.Owl2ImageProcessor(side, side, 3, owl2.CLIP_MEAN, owl2.CLIP_STD)
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8))
              for _ in range(images)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            start = time.perf_counter()
            processor(photos, pool if threads > 1 else None)
            best = min(best, time.perf_counter() - start)
    return 1000 * best / images


def score(level_logits: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], device=level_logits.device)
    return torch.softmax(level_logits, -1) @ weights


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the tiny model on the CPU in float32, to check the script")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 16])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    owl2 = load_architecture()
    if args.dry_run:
        config, device, dtype, images = owl2.TINY_CONFIG, "cpu", torch.float32, 8
        batches = [1, 4]
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --dry-run to check the script on the CPU")
        config, device, dtype = owl2.Owl2Config(), "cuda", getattr(torch, args.dtype)
        images, batches = args.images, args.batches
    with torch.device("meta"):
        net = owl2.MplugOwl2(config)
    owl2.random_weights(net, args.seed, device=device, dtype=dtype)
    weights_gib = sum(p.numel() * p.element_size() for p in net.parameters()) / 2**30
    parameters = sum(p.numel() for p in net.parameters())

    generator = torch.Generator().manual_seed(args.seed)
    side = config.vision.image_size
    pixels = torch.randn(images, 3, side, side, generator=generator)
    ids = torch.randint(3, config.vocab_size, (PREFIX_IDS + SUFFIX_IDS,), generator=generator)
    prompt = owl2.Owl2Prompt((1, *ids[:PREFIX_IDS - 1].tolist()), tuple(ids[PREFIX_IDS:].tolist()))
    vocab_ids = torch.randint(3, config.vocab_size, (5,), generator=generator).tolist()
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run, tiny model)"
    length = PREFIX_IDS + config.visual_tokens + SUFFIX_IDS
    print(f"device {name}; torch {torch.__version__}; {str(dtype).removeprefix('torch.')}; "
          f"mPLUG-Owl2 {parameters / 1e6:,.1f} M parameters ({weights_gib:.2f} GiB), random; "
          f"{length} tokens per image; {images} images per setting")

    rates = {}
    for batch in batches:
        rate, peak = throughput(net, pixels, prompt, vocab_ids, batch, device)
        rates[batch] = rate
        print(f"batch {batch:>2}: {rate:8.1f} images/s, peak memory {peak:.2f} GiB")
    low, high = batches
    print(f"ratio batch {high} / batch {low} images/s: {rates[high] / rates[low]:.2f}")

    threads = 4   # qbench's default --workers: the adapter shares a batch among them
    one, shared = pixel_preparation_ms(owl2, side, 1), pixel_preparation_ms(owl2, side, threads)
    print(f"CPU pixel preparation (pad, PIL resize 1024x768 to {side}, normalise): "
          f"{one:.1f} ms/image on one thread, {shared:.1f} on {threads}; forward pass at batch "
          f"{high}: {1000 / rates[high]:.1f} ms/image")

    batched = net.next_token_logits(pixels[:high], prompt, vocab_ids)
    single = torch.cat([net.next_token_logits(pixels[i:i + 1], prompt, vocab_ids)
                        for i in range(high)])
    print(f"batch {high} vs one at a time ({str(dtype).removeprefix('torch.')}): level logits "
          f"max abs diff {(batched - single).abs().max().item():.3g}, scores max abs diff "
          f"{(score(batched) - score(single)).abs().max().item():.3g}")


if __name__ == "__main__":
    main()
