"""Q-Insight-sized throughput on one GPU, prepared to the minute: the Qwen2.5-VL-7B architecture
with random bf16 weights built directly on the GPU (its config.json written out, nothing
downloaded), run through qbench's own adapters end to end on synthetic 1024x768 images
(KonIQ's size) with a fixed number of generated tokens. Every configuration goes through the
runner's path: each batch's inputs built on a worker thread while the batch before it runs
(qbench.data.images.prepare_ahead), pinned and copied without blocking.

  transformers, batch 1        the released demos' way: one image per `generate` (demo sampling)
  transformers, batch B1, B2   batched left-padded generation at two sizes
  level tokens, batch 1        `qwen-vl-levels`: one forward pass per image
  level-token efficiency       `qwen-vl-levels` at batch BL, images in and scores out, against
                               the bare forward pass on inputs built beforehand on the GPU
                               (benchmarks/efficiency.py); its adapter rate is the
                               `level tokens, batch BL` row
  vLLM                         `qinsight` with backend=vllm when vLLM is importable (dummy
                               weights from the same config.json); one line saying so when not

Each generation configuration runs on a subset sized to fit its share of --budget-s (at least
one batch); the efficiency measurement runs a fixed --efficiency-images at batch BL, best of 2
interleaved passes, and prints the CPU time of building inputs alone (what the worker thread
must keep up with; torch's CPU threads, printed first, set it). Printed per configuration:
images/s, generated tokens/s, peak GPU memory and the projected time for KonIQ's 2,010 test
images; then lines with `ratio`: batched generation and vLLM against transformers at batch 1,
level tokens at batch BL against batch 1; then `level-token efficiency ratio: X`. Random
weights emit nonsense: answers are unparsed, which costs nothing here; speed is all that is
measured.

    python benchmarks/gpu_throughput.py                 # one H100/H200: about 3 minutes in all
    OMP_NUM_THREADS=1 python benchmarks/gpu_throughput.py --dry-run   # same code, tiny model, CPU

Needs torch, transformers >= 4.56 and qbench's core only (no datasets, TRL, pyiqa or vLLM):
`pip install --no-deps --no-build-isolation -e .`, or nothing at all: a checkout that is not
installed is importable as it stands (see `import_qbench_from_checkout`).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KONIQ_TEST_IMAGES = 2010

# Qwen2.5-VL-7B-Instruct's sizes (its config.json)
QWEN2_5_VL_7B_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                          num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                          max_position_embeddings=128000, max_window_layers=28,
                          rms_norm_eps=1e-6, hidden_act="silu", use_sliding_window=False,
                          sliding_window=32768)
QWEN2_5_VL_7B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                            out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                            temporal_patch_size=2, window_size=112,
                            fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu",
                            in_channels=3, tokens_per_second=2)
QWEN2_5_VL_MAX_PIXELS = 12845056  # the released processor's limit; 1024x768 stays whole


def import_qbench_from_checkout() -> None:
    """Make `qbench` importable from this checkout when it is not installed: pyproject maps
    tasks/, baselines/ and trainer/ into the qbench namespace; do the same mapping here."""
    if importlib.util.find_spec("qbench") is not None:
        return
    sys.path.insert(0, str(ROOT))
    import qbench
    for folder in ("tasks", "baselines", "trainer"):
        name = f"qbench.{folder}"
        spec = importlib.util.spec_from_file_location(
            name, ROOT / folder / "__init__.py", submodule_search_locations=[str(ROOT / folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        setattr(qbench, folder, module)
        spec.loader.exec_module(module)


@dataclass(frozen=True)
class Plan:
    """What runs, on how much, within how long."""

    device: str
    dtype: str
    text: dict
    vision: dict
    max_pixels: int
    new_tokens: int
    single_images: int            # transformers, batch 1
    batch_sizes: tuple[int, int]  # transformers, batched
    batched_images: int
    level_batch: int
    efficiency_images: int        # level tokens at level_batch: adapter against bare forward
    vllm_images: int
    budget_s: float               # generation and level tokens at batch 1, model build excluded
    attn_implementation: str = "sdpa"


def gpu_plan() -> Plan:
    # 160 images at batch 32 on a 7B model: some 7 s per pass; generation within 80 s
    return Plan(device="cuda", dtype="bfloat16", text=QWEN2_5_VL_7B_TEXT,
                vision=QWEN2_5_VL_7B_VISION, max_pixels=QWEN2_5_VL_MAX_PIXELS, new_tokens=128,
                single_images=4, batch_sizes=(16, 64), batched_images=192, level_batch=32,
                efficiency_images=160, vllm_images=256, budget_s=80)


def dry_run_plan() -> Plan:
    from qbench.testing.tiny import MAX_PIXELS, TINY_TEXT, TINY_VISION
    return Plan(device="cpu", dtype="float32", text=TINY_TEXT, vision=TINY_VISION,
                max_pixels=MAX_PIXELS, new_tokens=8, single_images=2, batch_sizes=(2, 4),
                batched_images=8, level_batch=4, efficiency_images=8, vllm_images=8,
                budget_s=60)


# Shares of the budget; what a configuration leaves unused is not handed on.
SHARES = {"single": 0.25, "batched_small": 0.25, "batched_large": 0.4, "levels_single": 0.1}
EFFICIENCY_PASSES = 2


@dataclass
class Measured:
    label: str
    images: int = 0
    seconds: float = 0.0
    tokens: int = 0
    peak_gb: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def synthetic_images(n: int, size: tuple[int, int] = (1024, 768)) -> list[list[Image.Image]]:
    """n images of KonIQ's size: smooth gradients with noise, 8 distinct ones reused."""
    rng = np.random.default_rng(0)
    width, height = size
    distinct = []
    for i in range(min(n, 8)):
        ramp = np.linspace(0, 255, width)[None, :, None] * (0.3 + 0.1 * i)
        noise = rng.normal(0, 20, (height, width, 3))
        pixels = np.clip(ramp + noise + 40 * i % 256, 0, 255).astype(np.uint8)
        distinct.append(Image.fromarray(pixels))
    return [[distinct[i % len(distinct)]] for i in range(n)]


def build_model(plan: Plan, folder: Path):
    """(network, processor) of the planned sizes with random weights, made on the device in
    the planned dtype; config, processor and generation config written to `folder`."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from qbench.testing.tiny import ROPE_THETA, qwen2_5_vl_config, tiny_processor

    processor = tiny_processor(max_pixels=plan.max_pixels)
    tokenizer = processor.tokenizer
    text = dict(plan.text)
    text.setdefault("vocab_size", len(tokenizer))
    config = qwen2_5_vl_config(tokenizer, text=text, vision=plan.vision, rope_theta=ROPE_THETA)
    generation = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    config.save_pretrained(folder)
    processor.save_pretrained(folder)
    generation.save_pretrained(folder)

    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, plan.dtype))
    try:
        with torch.device(plan.device):
            network = Qwen2_5_VLForConditionalGeneration._from_config(
                config, attn_implementation=plan.attn_implementation)
    finally:
        torch.set_default_dtype(default_dtype)
    return network.eval(), processor


class TokenCount:
    """Counts the tokens `generate` adds (padding after an early end excluded)."""

    def __init__(self, network, pad_token_id: int):
        self.tokens = 0
        generate = network.generate

        def counting(*args, **kwargs):
            out = generate(*args, **kwargs)
            added = out[:, kwargs["input_ids"].shape[1]:]
            self.tokens += int((added != pad_token_id).sum())
            return out

        network.generate = counting


def peak_memory_gb(device: str) -> float | None:
    import torch
    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def reset_peak(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def measure(label: str, model, images, batch: int, budget_s: float, device: str,
            tokens: TokenCount | None) -> Measured:
    """Whole batches through the model as the runner feeds it (each batch's inputs prepared
    on a worker thread while the batch before it runs) until `images` are done or `budget_s`
    is spent."""
    from qbench import Sample
    from qbench.data.images import LoadedBatch, prepare_ahead
    result = Measured(label)
    reset_peak(device)
    before = tokens.tokens if tokens else 0
    batches = []
    for i in range(0, len(images), batch):
        chunk = [list(x) for x in images[i:i + batch]]
        batches.append(LoadedBatch([Sample(id=f"{label}-{i + j}", task="bench", kind="score",
                                           images=("x",)) for j in range(len(chunk))],
                                   chunk, {}))
    start = time.perf_counter()
    for loaded in prepare_ahead(batches, model.prepare):
        assert loaded.prepared is not None
        predictions = loaded.prepared.result()()
        if any(p.status == "model_error" for p in predictions):
            raise SystemExit(f"{label}: {predictions[0].error}")
        result.images += len(predictions)
        # answers are on the host: the device is done with this batch
        result.seconds = time.perf_counter() - start
        if result.seconds > budget_s:
            break   # (the next batch's prepare is left to finish, untimed)
    result.tokens = (tokens.tokens - before) if tokens else 0
    result.peak_gb = peak_memory_gb(device)
    return result


def projected(images_per_s: float) -> str:
    if not images_per_s:
        return "-"
    minutes = KONIQ_TEST_IMAGES / images_per_s / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def report(rows: list[Measured], pairs: list[tuple[str, str]]) -> None:
    print(f"{'configuration':<34}{'images':>7}{'seconds':>9}{'images/s':>10}{'gen tok/s':>11}"
          f"{'peak GB':>9}   KonIQ {KONIQ_TEST_IMAGES} images")
    for row in rows:
        peak = f"{row.peak_gb:.1f}" if row.peak_gb is not None else "-"
        rate = f"{row.tokens / row.seconds:.1f}" if row.tokens and row.seconds else "-"
        print(f"{row.label:<34}{row.images:>7}{row.seconds:>9.1f}{row.images_per_s:>10.3f}"
              f"{rate:>11}{peak:>9}   {projected(row.images_per_s)}")
    by_label = {row.label: row for row in rows}
    for label, baseline in pairs:
        row, base = by_label.get(label), by_label[baseline]
        if row and row.images_per_s and base.images_per_s:
            print(f"ratio {label} vs {baseline}: "
                  f"{row.images_per_s / base.images_per_s:.2f} (images/s)")


def run_vllm(plan: Plan, folder: Path, images, budget_s: float) -> Measured | None:
    """`qinsight` with backend=vllm on dummy weights of the same config, or None (and a line
    saying why) when vLLM cannot be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("vLLM: skipped (not importable here)")
        return None
    from qbench import ModelConfig
    from qbench.backends.vlm import VLLMGenerator, VLLMSettings, load_processor
    from qbench.baselines.qinsight import QInsight
    processor = load_processor(folder, "qinsight")
    generator = VLLMGenerator(folder, processor, VLLMSettings(
        dtype=plan.dtype, load_format="dummy", max_model_len=4096), seed=0, model="qinsight")
    counter = {"tokens": 0}
    generate = generator.llm.generate

    def counting(*args, **kwargs):
        outputs = generate(*args, **kwargs)
        counter["tokens"] += sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return outputs

    generator.llm.generate = counting
    model = QInsight(ModelConfig(model_path=folder, device=plan.device, options={
        "backend": "vllm", "max_new_tokens": plan.new_tokens}), generator=generator)
    row = measure("vLLM, all images at once", model, images, len(images), budget_s, plan.device,
                  None)
    row.tokens = counter["tokens"]
    model.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code on the tiny model, on the CPU, in seconds")
    parser.add_argument("--budget-s", type=float, help="override the plan's time budget")
    parser.add_argument("--new-tokens", type=int, help="override the generated tokens")
    parser.add_argument("--efficiency-images", type=int,
                        help="override the images of the efficiency measurement")
    parser.add_argument("--attn-implementation", default="sdpa",
                        help="e.g. flash_attention_2 where flash-attn is installed: its "
                             "variable-length kernel runs the vision tower's window attention "
                             "in one call instead of one call per window")
    args = parser.parse_args()
    import_qbench_from_checkout()
    sys.path.insert(0, str(ROOT / "benchmarks"))   # efficiency.py, run as a script or not
    import torch
    from efficiency import level_token_efficiency

    from qbench import ModelConfig
    from qbench.backends.vlm import TransformersGenerator
    from qbench.baselines.qalign import HFVisionLevels
    from qbench.baselines.qinsight import QInsight

    plan = dry_run_plan() if args.dry_run else gpu_plan()
    plan = replace(plan, budget_s=args.budget_s or plan.budget_s,
                   new_tokens=args.new_tokens or plan.new_tokens,
                   efficiency_images=args.efficiency_images or plan.efficiency_images,
                   attn_implementation=args.attn_implementation)
    if plan.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --dry-run on a CPU")
    device_name = torch.cuda.get_device_name() if plan.device == "cuda" else "CPU"
    print(f"{device_name}; torch {torch.__version__}; {plan.dtype}; "
          f"{plan.attn_implementation}; {plan.new_tokens} new tokens per image; "
          f"budget {plan.budget_s:.0f} s; {torch.get_num_threads()} CPU threads for torch")

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "qwen2_5_vl"
        started = time.perf_counter()
        network, processor = build_model(plan, folder)
        params = sum(p.numel() for p in network.parameters())
        print(f"built {params / 1e6:,.1f} M parameters on {plan.device} in "
              f"{time.perf_counter() - started:.0f} s; image processor "
              f"{type(processor.image_processor).__name__}")

        tokens = TokenCount(network, processor.tokenizer.pad_token_id)
        generator = TransformersGenerator(network, processor)
        config = ModelConfig(model_path=folder, device=plan.device,
                             options={"max_new_tokens": plan.new_tokens})
        generating = QInsight(config, generator=generator)  # the demos' sampling, seed 42
        levels = HFVisionLevels(ModelConfig(model_path=folder, device=plan.device),
                                loaded=(network, processor))
        warm = synthetic_images(1)
        measure("warm-up", QInsight(replace(config, options={"max_new_tokens": 2}),
                                    generator=generator), warm, 1, 0, plan.device, None)
        measure("warm-up", levels, warm, 1, 0, plan.device, None)

        budget = plan.budget_s
        small, large = plan.batch_sizes
        rows = [
            measure("transformers, batch 1", generating, synthetic_images(plan.single_images),
                    1, SHARES["single"] * budget, plan.device, tokens),
            measure(f"transformers, batch {small}", generating,
                    synthetic_images(plan.batched_images), small,
                    SHARES["batched_small"] * budget, plan.device, tokens),
            measure(f"transformers, batch {large}", generating,
                    synthetic_images(plan.batched_images), large,
                    SHARES["batched_large"] * budget, plan.device, tokens),
            measure("level tokens, batch 1", levels, synthetic_images(plan.level_batch), 1,
                    SHARES["levels_single"] * budget, plan.device, None),
        ]
        efficiency = level_token_efficiency(
            levels, synthetic_images(plan.efficiency_images), plan.level_batch,
            EFFICIENCY_PASSES, lambda: synchronize(plan.device))
        # its best pass; no peak memory: the bare forward's prebuilt inputs share the device
        rows.append(Measured(f"level tokens, batch {plan.level_batch}",
                             images=efficiency.samples,
                             seconds=efficiency.samples / efficiency.adapter))
        generating.close()
        levels.close()
        del network, generator, generating, levels
        vllm_row = run_vllm(plan, folder, synthetic_images(plan.vllm_images),
                            SHARES["batched_large"] * budget)
        single = "transformers, batch 1"
        pairs = [(f"transformers, batch {small}", single), (f"transformers, batch {large}", single),
                 (f"level tokens, batch {plan.level_batch}", "level tokens, batch 1"),
                 ("vLLM, all images at once", single)]
        report(rows + ([vllm_row] if vllm_row else []), pairs)
        print("\n".join(efficiency.lines()))
        print(f"total {time.perf_counter() - started:.0f} s")


def synchronize(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
