"""Harness overhead: wall time of `qbench run` with a zero-cost model over N images, divided by
the time a bare PIL loop takes to decode the same images to RGB. Goals: <= 1.2 with decoding
inline (workers 0), <= 0.9 with the prefetch pool (decoding overlaps across cores).

    OMP_NUM_THREADS=1 python benchmarks/harness_overhead.py [--images 3000] [--size 384]
        [--repeats 3]

Prints the ratios of one run: harness (prefetch threads) / bare, and harness without prefetch
(decoding inline) / bare. The three are timed in interleaved passes and each one's fastest
pass is compared: on a shared machine single passes move by 20% or more.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from qbench import Model, Prediction, Sample, Task, TaskData, register_model, register_task
from qbench.core.registry import load_plugins
from qbench.run.runner import RunConfig, run


@register_task
class FolderTask(Task):
    name = "bench-folder"
    kind = "score"
    in_all = False

    def locate(self, data_root, override=None):
        return override or data_root

    def load(self, folder: Path, split: str) -> TaskData:
        paths = sorted(folder.glob("*.jpg"))
        return TaskData([Sample(id=p.name, task=self.name, kind="score", images=(str(p),),
                                mos=float(i % 5 + 1), mos_norm=float(i % 5 + 1))
                         for i, p in enumerate(paths)])


@register_model("bench-zero")
class ZeroCostModel(Model):
    """Answers instantly: what remains is the harness"""

    name = "bench-zero"

    def predict(self, samples, images):
        return [Prediction(task=s.task, sample_id=s.id, score=float(len(s.id) % 5))
                for s in samples]


def make_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    for i in range(count):
        tile = np.roll(base, i, axis=0)
        Image.fromarray(tile).resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.images, args.size)
        paths = sorted(str(p) for p in folder.glob("*.jpg"))
        for p in paths:  # warm the page cache for both contenders
            Path(p).read_bytes()
        load_plugins()   # one-time imports of the process are not the harness's per-run cost

        def bare() -> None:   # what a plain script does: decode each image to RGB
            for p in paths:
                with Image.open(p) as im:
                    im.convert("RGB")

        def harness(label: str, workers: int, repeat: int) -> None:
            config = RunConfig(model="bench-zero", tasks=["bench-folder"], data_root=folder,
                               output_dir=Path(tmp) / f"results-{label}-{repeat}",
                               batch_size=args.batch_size, workers=workers, progress=False)
            result = run(config)
            assert result.ran and result.ran[0].metrics["n_ok"] == args.images

        timings: dict[str, list[float]] = {"bare": [], "prefetch": [], "inline": []}
        for repeat in range(args.repeats):
            for label, work in (("bare", bare),
                                ("prefetch", lambda: harness("prefetch", 4, repeat)),
                                ("inline", lambda: harness("inline", 0, repeat))):
                start = time.perf_counter()
                work()
                timings[label].append(time.perf_counter() - start)
    best = {label: min(seconds) for label, seconds in timings.items()}

    def passes(label: str) -> str:
        return "passes " + " ".join(f"{seconds:.2f}" for seconds in timings[label])

    print(f"images: {args.images} JPEG {args.size}x{args.size}, batch {args.batch_size}, "
          f"best of {args.repeats} interleaved passes")
    print(f"bare decoding loop:            {best['bare']:7.2f} s  "
          f"({args.images / best['bare']:7.1f} images/s; {passes('bare')})")
    for label in ("prefetch", "inline"):
        print(f"qbench run, {label:<8} decoding: {best[label]:7.2f} s  ratio to bare "
              f"{best[label] / best['bare']:.3f}  ({passes(label)})")


if __name__ == "__main__":
    main()
