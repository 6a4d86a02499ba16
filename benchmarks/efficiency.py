"""The level-token efficiency ratio, shared by `adapter_throughput.py --efficiency` (the tiny
model on the CPU) and `gpu_throughput.py` (the 7B architecture on a GPU):

    samples/s through the adapter   images in, scores out, each batch's inputs built on a worker
                                    thread while the batch before it runs, as `qbench run` and
                                    `qbench score` do it (qbench.data.images.prepare_ahead)
    ÷ samples/s of the bare forward the network alone on inputs built (and moved to the
                                    device) beforehand

both at one batch size over the same images, best of interleaved passes, one process. What the
harness adds around the model (input building not hidden, the hand-over between threads, the
softmax, the prediction records) is 1 − ratio. The first batch's inputs cannot be built ahead
of anything, so a pass of few batches understates the ratio a whole task sees (over 16
batches, about 1/16 of one batch's input building). The adapter's scores are checked against
`model.predict` one batch at a time (the path without building ahead): they must be equal.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from qbench import Sample


@dataclass(frozen=True)
class Chunk:
    samples: list[Sample]
    images: list[list[Image.Image]]
    inputs: Any   # built beforehand and on the device: what the bare forward reads


@dataclass(frozen=True)
class Efficiency:
    batch: int
    samples: int
    passes: int
    bare: float       # samples/s, forward pass on prebuilt inputs
    adapter: float    # samples/s, images in, scores out, inputs built ahead
    inline: float     # samples/s, images in, scores out, inputs built in line (model.predict)
    building_ms: float   # ms of building inputs per image on the CPU, alone (first pass)
    same_scores: bool

    @property
    def ratio(self) -> float:
        return self.adapter / self.bare

    def lines(self) -> list[str]:
        return [
            f"level tokens, batch {self.batch}, {self.samples} samples, best of {self.passes} "
            "interleaved passes:",
            f"  bare forward on prebuilt inputs        {self.bare:10.2f} samples/s",
            f"  adapter, inputs built ahead (runner)   {self.adapter:10.2f} samples/s",
            f"  adapter, inputs built in line          {self.inline:10.2f} samples/s   "
            f"(ratio {self.inline / self.bare:.3f})",
            f"  building inputs alone: {self.building_ms:.2f} ms per image on the CPU, the "
            f"bare forward {1000 / self.bare:.2f} ms per image",
            f"  scores of both adapter paths equal: {'yes' if self.same_scores else 'NO'}",
            f"level-token efficiency ratio: {self.ratio:.3f}",
        ]


def level_token_efficiency(model, images: Sequence[Sequence[Image.Image]], batch: int,
                           passes: int, synchronize: Callable[[], None] = lambda: None
                           ) -> Efficiency:
    """The ratio for a level-token adapter (`qwen-vl-levels`: `network`, `level_inputs`,
    `prepare`, `predict`) over `images`; `synchronize` waits for the device (CUDA)."""
    import torch

    from qbench.backends.vlm import to_device
    from qbench.data.images import LoadedBatch, prepare_ahead

    samples = [Sample(id=str(i), task="bench", kind="score", images=("x",))
               for i in range(len(images))]
    network = model.network
    chunks: list[Chunk] = []
    building = 0.0   # the CPU side alone, once: what the worker thread must keep up with
    for i in range(0, len(images), batch):
        imgs = [list(x) for x in images[i:i + batch]]
        start = time.perf_counter()
        inputs = model.level_inputs(imgs)
        building += time.perf_counter() - start
        chunks.append(Chunk(samples[i:i + batch], imgs, to_device(inputs, network.device)))

    def bare(part: list[Chunk]) -> None:
        with torch.inference_mode():
            for chunk in part:
                network(**chunk.inputs, logits_to_keep=1, use_cache=False)
        synchronize()

    ahead_scores: list[float | None] = []
    inline_scores: list[float | None] = []

    def adapter(part: list[Chunk]) -> None:
        ahead_scores.clear()
        loaded = [LoadedBatch(list(c.samples), c.images, {}) for c in part]
        for done in prepare_ahead(loaded, model.prepare):
            assert done.prepared is not None
            ahead_scores.extend(p.score for p in done.prepared.result()())

    def inline(part: list[Chunk]) -> None:
        inline_scores.clear()
        for c in part:
            inline_scores.extend(p.score for p in model.predict(c.samples, c.images))

    steps = {"bare": bare, "adapter": adapter, "inline": inline}
    warm = chunks[:1]
    for step in steps.values():   # warm-up on one batch: allocations, kernels, tokenizer cache
        step(warm)
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(passes):
        for name, step in steps.items():
            start = time.perf_counter()
            step(chunks)
            best[name] = min(best[name], time.perf_counter() - start)
    n = len(images)
    return Efficiency(batch=batch, samples=n, passes=passes, bare=n / best["bare"],
                      adapter=n / best["adapter"], inline=n / best["inline"],
                      building_ms=1000 * building / n, same_scores=ahead_scores == inline_scores)
