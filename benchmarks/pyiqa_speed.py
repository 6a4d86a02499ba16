"""`qbench run --model pyiqa:<metric>` against pyiqa's own loop (`metric(path)` per image) on the
same JPEGs, both timed as whole processes (interpreter start, imports, metric build, every image),
in one run. Prints the seconds of each and the ratio pyiqa time / qbench time (> 1: qbench is
faster; with --repeats, of the best pass of each side), and checks that both gave the same scores.

    OMP_NUM_THREADS=1 python benchmarks/pyiqa_speed.py [--images 400] [--metric piqe]
        [--workers 1 2] [--repeats 1]

The images are 512x384 JPEGs cut from scikit-image's bundled photographs (offline). Both sides run
with the environment this script sees (set OMP_NUM_THREADS=1 for one thread per process, as the
per-path loop of pyiqa then uses one core). On a machine shared with other work the figures move
by tens of percent: pass --repeats N (interleaved passes; each side's best pass is compared).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry",
          "retina", "hubble_deep_field")
TASK = "pyiqa-bench"

# The images as a qbench task, loaded with --include: one score sample per JPEG (the JPEG
# quality stands in for a MOS; only the timing and the scores matter here).
PLUGIN = f'''
import csv
from pathlib import Path
from qbench import Sample, Task, TaskData, register_task

@register_task
class PyiqaBench(Task):
    name = "{TASK}"
    kind = "score"
    markers = ("labels.csv",)

    def load(self, folder: Path, split: str) -> TaskData:
        rows = list(csv.DictReader((folder / "labels.csv").open()))
        return TaskData([Sample(id=r["name"], task=self.name, kind="score",
                                images=(str(folder / r["name"]),), mos=float(r["mos"]),
                                mos_norm=float(r["mos"])) for r in rows],
                        source=str(folder / "labels.csv"))
'''

# pyiqa's own way: build the metric, call it on each path, write the scores.
PYIQA_LOOP = """
import json, sys, pyiqa, torch
metric = pyiqa.create_metric(sys.argv[1], device=torch.device("cpu"))
paths = open(sys.argv[2]).read().split()
scores = {path: float(metric(path)) for path in paths}
json.dump(scores, open(sys.argv[3], "w"))
"""


def photographs() -> list[np.ndarray]:
    out = []
    for name in PHOTOS:
        photo = getattr(data, name)()
        out.append(photo[0] if isinstance(photo, tuple) else photo)   # stereo pair: left
    return out


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` 512x384 JPEGs: random 4:3 crops of the photographs, flipped at random, JPEG
    quality 70-95; labels.csv names each with its quality."""
    rng = np.random.default_rng(seed)
    photos = photographs()
    folder.mkdir(parents=True, exist_ok=True)
    paths, lines = [], ["name,mos"]
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        crop_h = int(min(height, width * 3 / 4) * rng.uniform(0.6, 1.0))
        crop_w = crop_h * 4 // 3
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        image = Image.fromarray(photo[top:top + crop_h, left:left + crop_w]).resize(
            (512, 384), Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        quality = int(rng.integers(70, 96))
        path = folder / f"{i:04d}.jpg"
        image.save(path, quality=quality)
        paths.append(path)
        lines.append(f"{path.name},{quality}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return paths


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds of the whole process, and the CPU seconds it and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def qbench_scores(run_folder: Path) -> dict[str, float]:
    (run_dir,) = [p for p in run_folder.iterdir() if (p / "predictions.jsonl").exists()]
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").open()]
    return {row["sample_id"]: row["score"] for row in rows if row.get("status") == "ok"}


def compare_once(tmp: Path, args: argparse.Namespace, label: str) -> dict[str, float]:
    """One pass: pyiqa's loop, then qbench at each worker count; wall seconds by side. Exits
    when qbench's scores differ from pyiqa's."""
    seconds = {}
    seconds["pyiqa"], cpu = timed([sys.executable, str(tmp / "loop.py"), args.metric,
                                   str(tmp / "paths.txt"), str(tmp / "pyiqa.json")])
    print(f"{label} pyiqa loop metric(path): {seconds['pyiqa']:.2f} s, {cpu:.1f} CPU s "
          f"(load average now {os.getloadavg()[0]:.2f})")
    reference = {Path(p).name: s for p, s in json.loads((tmp / "pyiqa.json").read_text()).items()}
    for workers in args.workers:
        out = tmp / f"run-{label}-{workers}"
        seconds[workers], cpu = timed([
            sys.executable, "-m", "qbench", "--include", str(tmp / "plugin.py"), "run",
            "--model", f"pyiqa:{args.metric}", "--tasks", TASK, "--data", f"{TASK}={tmp / 'images'}",
            "--workers", str(workers), "--output", str(out), "--no-progress"])
        scores = qbench_scores(out)
        if scores.keys() != reference.keys():
            sys.exit(f"qbench scored {len(scores)} images, pyiqa {len(reference)}")
        worst = max(abs(scores[k] - reference[k]) / max(abs(reference[k]), 1e-9) for k in reference)
        print(f"{label} qbench --workers {workers}: {seconds[workers]:.2f} s, {cpu:.1f} CPU s, "
              f"pyiqa/qbench {seconds['pyiqa'] / seconds[workers]:.2f}x (largest relative score "
              f"difference {worst:.1e})")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--metric", default="piqe")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1,
                        help="passes (interleaved); the ratio lines compare the best of each side")
    args = parser.parse_args()

    print(f"{args.images} JPEGs 512x384, pyiqa:{args.metric}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp / "images", args.images)
        (tmp / "paths.txt").write_text("\n".join(map(str, paths)))
        (tmp / "plugin.py").write_text(PLUGIN)
        (tmp / "loop.py").write_text(PYIQA_LOOP)
        passes = [compare_once(tmp, args, f"[{i + 1}/{args.repeats}]") for i in range(args.repeats)]
    best = {side: min(p[side] for p in passes) for side in passes[0]}
    for workers in args.workers:
        print(f"qbench --workers {workers} vs pyiqa loop (best of {args.repeats}): "
              f"{best[workers]:.2f} s vs {best['pyiqa']:.2f} s, "
              f"ratio {best['pyiqa'] / best[workers]:.2f}x")


if __name__ == "__main__":
    main()
