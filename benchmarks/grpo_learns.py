"""Does `qbench train` teach a model to rate images, and is it the labels that teach it? One
warm start, then two GRPO runs that differ only in the labels their rewards read (the true
levels, or the same levels shuffled across the images: the control), each evaluated on held-out
images through `qbench run`. CPU, seeded, two cores.

1. Images whose quality a tiny vision tower can see: 56 x 56 crops of the photographs bundled
   with scikit-image, each scaled to one mean brightness (140), then darkened to three levels
   (1: gain 0.45, 3: 0.75, 5: untouched); the level is the [1, 5] ground truth. Three sets of
   photographs that share none: `warm` (5 of qbench's fitting photographs, 90 images), `train`
   (the other 5, 90 images) and `test` (qbench's 10 test photographs, 150 images);
   `train-shuffled` is `train` with its levels permuted across the images. A score task
   registered from this file (`grpo-learns-brightness`) serves them to `data.score` and
   `qbench run` like any other.
2. Warm start on `warm`: 300 supervised steps (batch 8, AdamW 3e-3) on the released layout
   `<think>\\nok\\n</think>\\n<answer>\\n{"rating": R}\\n</answer>`, R the image's level for half
   of the draws and a level drawn at random for the other half. It learns the format and, a
   little, to use the image.
3. `qbench train` twice, in two processes at once: the recipe's strict format reward and score
   reward (|rating - level| < 0.35), N = 8, beta 1e-3, loss "grpo", top_k 50, temperature 1;
   40 steps of 4 prompts x 8 completions, learning rate 1e-3, 40 completion tokens, sized for
   a 0.4 M-parameter model on a CPU. The two configs differ in the split (`train` or
   `train-shuffled`) and the output folder only; same seed, same order of images.
4. `qbench run` on `test` (the `qinsight` adapter's default decoding, the released demos'
   sampling; 40 new tokens): the warm start once (it is both runs' start, so its evaluation is
   both `srcc_before` and `control_srcc_before`), then each run's final model.

    OMP_NUM_THREADS=1 python benchmarks/grpo_learns.py [--seed 0] [--json OUT]
    OMP_NUM_THREADS=1 python benchmarks/grpo_learns.py --quick    # 2-3 minutes (the tests)

Measured on this 2-core machine, shared with other work (load average 2-4 during the runs;
each run used 373-425 CPU seconds, so on two idle cores it cannot take less than 190-215 s):

    seed  held-out SRCC before   true labels after     control after      wall
    0     0.193                  0.578 (+0.385)        0.064 (-0.129)     350 s
    1     0.415                  0.691 (+0.276)        0.262 (-0.152)     453 s
    2     0.085                  0.653 (+0.568)        0.043 (-0.042)     451 s

Seed 0 run again gave the same figures to the last digit (338 s). n = 150 (standard error of
an SRCC about 0.08). The true-label run's score reward climbs (seed 0: 0.46 over the first 10
steps, 0.55 over the last 10) while the control's stays near chance (0.31 -> 0.23; 1/3 of
ratings match a shuffled label); the format reward is 0.86-0.95 over the first and the last
10 steps of every run. The control loses held-out SRCC: rewards that do not depend on the
image pull the policy off the image dependence the warm start gave it.

What the earlier version of this script measured (held-out SRCC -0.03 -> 0.03) had two causes
found here. Its warm start trained on random ratings, which teaches the model to ignore the
image. And its darkening (gains 0.2 and 0.45 of photographs whose own brightness varies) left
levels 1 and 3 nearly the same to the tiny vision tower: the distance between their mean image
features was 0.17 of the spread within a level, against 1.35 with the brightness scaled first
and the gains above (3 vs 5: 2.9 and 2.0). On the way to this design (probes of the
rating-token probabilities, not `qbench run`): a warm start with every rating right at
learning rate 1e-3 began to use the image after 100-150 steps, but stopped at 150 it had not
learned the format (format reward 0.06), from which GRPO did not recover; at 3e-3 with every
rating right it reached an SRCC of about 0.8 in 300 steps, leaving little to show; with
20-40 % of ratings right (1e-3 or 3e-3) it did not use the image within 300 steps. With 2
prompts per step for 80 steps, one control drifted from 0.11 to 0.28 (and its true-label run
reached 0.57): the noise of updates on shuffled labels; 4 prompts per step for 40 steps, the
same number of completions, is what the table above ran.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from qbench import Sample, Task, TaskData, register_task
from qbench.core.protocol import build_messages

TASK = "grpo-learns-brightness"
LEVEL_GAINS = {1: 0.45, 3: 0.75, 5: 1.0}   # quality level → brightness multiplier
MEAN_BRIGHTNESS = 140.0                      # every crop's mean before it is darkened
IMAGE_SIZE = 56                              # 56 x 56: 4 image tokens for the tiny model
THINK = "ok"
SHUFFLED = "train-shuffled"                  # the control's split: train, levels permuted
SCRIPT = Path(__file__).resolve()


@register_task
class Brightness(Task):
    """Darkened crops of bundled photographs; ground truth the quality level (1, 3 or 5)."""

    name = TASK
    kind = "score"
    description = "grpo_learns.py: darkened photograph crops, levels 1, 3 and 5"
    splits = ("warm", "train", SHUFFLED, "test")
    default_split = "test"
    markers = ("train.json", "test.json")
    in_all = False

    def load(self, folder: Path, split: str) -> TaskData:
        meta = folder / f"{split}.json"
        records = json.loads(meta.read_text(encoding="utf-8"))
        samples = [Sample(id=r["image"], task=self.name, kind="score",
                          images=(str(folder / r["image"]),), mos=float(r["level"]),
                          mos_norm=float(r["level"])) for r in records]
        return TaskData(samples, source=str(meta), split=split)


@dataclass(frozen=True)
class Plan:
    warm_photos: int         # of qbench's fitting photographs, from the first
    train_photos: int        # the next ones
    crops: int               # per fitting photograph (each at every level)
    test_photos: int         # of qbench's test photographs
    test_crops: int
    warm_steps: int          # supervised steps, batch 8
    warm_lr: float
    warm_right: float        # share of warm-start draws whose rating is the image's level
    grpo_steps: int
    prompts_per_step: int    # × 8 completions
    grpo_lr: float
    seed: int = 0


FULL = Plan(warm_photos=5, train_photos=5, crops=6, test_photos=10, test_crops=5,
            warm_steps=300, warm_lr=3e-3, warm_right=0.5, grpo_steps=40, prompts_per_step=4,
            grpo_lr=1e-3)
QUICK = Plan(warm_photos=2, train_photos=2, crops=2, test_photos=4, test_crops=1,
             warm_steps=50, warm_lr=3e-3, warm_right=0.5, grpo_steps=3, prompts_per_step=2,
             grpo_lr=1e-3)


# ------------------------------------------------------------------------------ data

def exposed_crops(photo: Path, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Crops of a photograph at IMAGE_SIZE, each scaled to the same mean brightness, so that
    how dark a test image is says its level whatever the photograph shows."""
    from qbench.tasks.synthetic import crops
    out = []
    for crop in crops(photo, count, 128, rng):
        small = np.asarray(Image.fromarray(crop).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
        out.append(small.astype(np.float32) * (MEAN_BRIGHTNESS / max(small.mean(), 1.0)))
    return out


def write_split(folder: Path, split: str, photos: list[Path], crops_per_photo: int,
                seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for photo in photos:
        for k, crop in enumerate(exposed_crops(photo, crops_per_photo, rng)):
            for level, gain in LEVEL_GAINS.items():
                name = f"images/{split}_{photo.stem}_{k}_level{level}.png"
                dark = np.clip(crop * gain + 0.5, 0, 255).astype(np.uint8)
                Image.fromarray(dark).save(folder / name)
                records.append({"image": name, "level": level})
    write_records(folder, split, records)
    return records


def write_records(folder: Path, split: str, records: list[dict]) -> None:
    (folder / f"{split}.json").write_text(json.dumps(records), encoding="utf-8")


def write_task(folder: Path, plan: Plan) -> dict[str, list[dict]]:
    """The splits: warm (the warm start's labelled examples), train, train-shuffled (the same
    images, levels permuted across them) and test, from disjoint photographs."""
    from qbench.tasks.synthetic import FIT_PHOTOS, TEST_PHOTOS, bundled_photo
    fit = [bundled_photo(*p) for p in FIT_PHOTOS]
    warm = fit[:plan.warm_photos]
    train = fit[plan.warm_photos:plan.warm_photos + plan.train_photos]
    test = [bundled_photo(*p) for p in TEST_PHOTOS[:plan.test_photos]]
    splits = {"warm": write_split(folder, "warm", warm, plan.crops, plan.seed),
              "train": write_split(folder, "train", train, plan.crops, plan.seed + 1),
              "test": write_split(folder, "test", test, plan.test_crops, plan.seed + 2)}
    levels = [r["level"] for r in splits["train"]]
    random.Random(plan.seed).shuffle(levels)
    splits[SHUFFLED] = [{**r, "level": level} for r, level in zip(splits["train"], levels,
                                                                   strict=True)]
    write_records(folder, SHUFFLED, splits[SHUFFLED])
    return splits


# ------------------------------------------------------------------------------ warm start

def answer_text(rating: float) -> str:
    return f'<think>\n{THINK}\n</think>\n<answer>\n{{"rating": {rating:.2f}}}\n</answer>'


def warm_start(base: Path, out: Path, folder: Path, records: list[dict], plan: Plan) -> Path:
    """Supervised steps on the answer layout; a share `warm_right` of the ratings are the
    image's level, the others drawn at random from the levels."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(base)
    model = AutoModelForImageTextToText.from_pretrained(base).train()
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "right"
    prompt = processor.apply_chat_template(build_messages("score"), add_generation_prompt=True,
                                           tokenize=False)
    rng = random.Random(plan.seed)
    torch.manual_seed(plan.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.warm_lr)
    decoded = {r["image"]: Image.open(folder / r["image"]).convert("RGB") for r in records}
    for _ in range(plan.warm_steps):
        batch = [rng.choice(records) for _ in range(8)]
        ratings = [r["level"] if rng.random() < plan.warm_right else rng.choice(list(LEVEL_GAINS))
                   for r in batch]
        images = [decoded[r["image"]] for r in batch]
        inputs = processor(text=[prompt + answer_text(r) + tokenizer.eos_token for r in ratings],
                           images=images, return_tensors="pt", padding=True)
        prompt_tokens = len(processor(text=[prompt], images=images[:1])["input_ids"][0])
        labels = inputs["input_ids"].clone()
        labels[:, :prompt_tokens] = -100
        labels[inputs["attention_mask"] == 0] = -100
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------ train, evaluate

RUNS = {"true": "train", "control": SHUFFLED}   # GRPO run → the split its rewards read


def grpo_config(model: Path, folder: Path, split: str, output_dir: Path, plan: Plan) -> dict:
    """The recipe (trainer/config.py defaults) with what a CPU and a tiny model need. The two
    runs' configs differ in the split (the labels the rewards read) and the output folder."""
    return {
        "model": {"path": str(model), "dtype": "float32", "min_pixels": None,
                  "max_pixels": None},
        "data": {"score": [{"task": TASK, "folder": str(folder), "split": split}],
                 "seed": plan.seed},
        "grpo": {"per_device_train_batch_size": 8 * plan.prompts_per_step,
                 "gradient_accumulation_steps": 1, "max_steps": plan.grpo_steps,
                 "save_steps": plan.grpo_steps, "learning_rate": plan.grpo_lr,
                 "lr_scheduler_type": "constant", "max_completion_length": 40,
                 "bf16": False, "use_cpu": True, "seed": plan.seed},
        "output_dir": str(output_dir), "resume": "never"}


def qbench_command(*args: str) -> list[str]:
    """`qbench ARGS` in a process of its own, with this file included (it registers the task)."""
    return [sys.executable, "-m", "qbench", "--include", str(SCRIPT), *args]


@dataclass
class Job:
    name: str
    command: list[str]
    log: Path
    ok: tuple[int, ...] = (0,)


def run_together(jobs: list[Job]) -> None:
    """Start the jobs at once (one thread each) and wait for all; the first failure stops the
    others and ends the script with the end of its log."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    running = []
    for job in jobs:
        with job.log.open("w") as out:
            running.append((job, subprocess.Popen(job.command, stdout=out,
                                                  stderr=subprocess.STDOUT, env=env)))
    try:
        for job, process in running:
            if process.wait() not in job.ok:
                tail = job.log.read_text(errors="replace").strip().splitlines()[-5:]
                raise SystemExit(f"{job.name} exited with {process.returncode} (log "
                                 f"{job.log}):\n" + "\n".join(tail))
    finally:
        for _, process in running:
            if process.poll() is None:
                process.terminate()
                process.wait()


def train_job(name: str, config: dict, work: Path) -> Job:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return Job(f"qbench train ({name})", qbench_command("train", "--config", str(path)),
               work / "logs" / f"train-{name}.log")


def eval_job(model: Path, folder: Path, results: Path, name: str) -> Job:
    """`qbench run` on the held-out split with the `qinsight` adapter's default decoding (the
    released demos' sampling); exit 1 (no answer parsed) still leaves the metrics to read."""
    return Job(f"qbench run ({name})", qbench_command(
        "run", "--model", "qinsight", "--model-path", str(model), "--model-arg",
        "max_new_tokens=40", "--tasks", TASK, "--data", f"{TASK}={folder}", "--split", "test",
        "--batch-size", "16", "--output", str(results), "--run-name", name, "--device", "cpu",
        "--workers", "0", "--no-progress"), results.parent / "logs" / f"{name}.log", (0, 1))


def read_evaluation(results: Path, name: str) -> dict:
    """`qbench run`'s metrics for the held-out split, plus the share of its answers in the
    released format (the format reward's test, read from predictions.jsonl)."""
    from qbench.core.protocol import format_ok
    run_dir = results / name
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))[TASK]
    rows = [json.loads(line) for line in
            (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    in_format = [format_ok(r.get("text") or "", strict=True) for r in rows]
    keep = ("n", "parsed_fraction", "srcc", "plcc", "status")
    return {**{k: metrics.get(k) for k in keep}, "format_rate": sum(in_format) / len(in_format)}


def step_rewards(output_dir: Path, steps: int) -> list[dict]:
    """Per GRPO step: mean total, format and score reward over the completions, and the KL."""
    state = json.loads((output_dir / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    return [{"step": h["step"], "reward": h["reward"],
             "format": h["rewards/format_reward/mean"], "score": h["rewards/score_reward/mean"],
             "kl": h.get("kl")}
            for h in state["log_history"] if "reward" in h]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: with 2 idle cores the wall time
    cannot be below half of it."""
    me, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def experiment(plan: Plan, work: Path) -> dict:
    import torch

    from qbench.testing.tiny import build_tiny_qwen2_5_vl
    torch.set_num_threads(1)
    clock, load_start = time.perf_counter(), os.getloadavg()[0]
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        seconds[name] = round(time.perf_counter() - clock - sum(seconds.values()), 1)

    folder, results = work / "brightness", work / "results"
    (work / "logs").mkdir(parents=True, exist_ok=True)
    splits = write_task(folder, plan)
    base = build_tiny_qwen2_5_vl(work / "tiny", seed=plan.seed)
    warm = warm_start(base, work / "warm", folder, splits["warm"], plan)
    lap("data_and_warm_start")
    configs = {name: grpo_config(warm, folder, split, work / name, plan)
               for name, split in RUNS.items()}
    run_together([train_job(name, config, work) for name, config in configs.items()]
                 + [eval_job(warm, folder, results, "before")])
    lap("grpo_runs_and_evaluation_before")
    run_together([eval_job(work / name / "final", folder, results, f"after-{name}")
                  for name in RUNS])
    lap("evaluations_after")
    before = read_evaluation(results, "before")
    after = {name: read_evaluation(results, f"after-{name}") for name in RUNS}
    curves = {name: step_rewards(work / name, plan.grpo_steps) for name in RUNS}
    true_levels = [r["level"] for r in splits["train"]]
    shuffled_levels = [r["level"] for r in splits[SHUFFLED]]
    return {
        "n_test": before["n"],
        "srcc_before": before["srcc"], "srcc_after": after["true"]["srcc"],
        # one checkpoint (the warm start) begins both runs: one evaluation serves both
        "control_srcc_before": before["srcc"], "control_srcc_after": after["control"]["srcc"],
        "evaluations": {"before": before, **{f"after_{k}": v for k, v in after.items()}},
        "reward_curves": curves,
        "control_label_srcc": spearman(true_levels, shuffled_levels),
        "configs": configs, "plan": asdict(plan),
        "seconds": {**seconds, "total": round(time.perf_counter() - clock, 1)},
        "cpu_seconds": round(cpu_seconds(), 1),
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "cores": len(os.sched_getaffinity(0))}


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


# ------------------------------------------------------------------------------ report

GOALS = "goal: true-label gain >= 0.2 ending >= 0.3; control gain < 0.1"


def gain(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def mean_of(steps: list[dict], key: str) -> float:
    return statistics.fmean(s[key] for s in steps if s[key] is not None)


def report(outcome: dict) -> None:
    plan = outcome["plan"]
    print(f"seed {plan['seed']}: {plan['grpo_steps']} GRPO steps of {plan['prompts_per_step']} "
          f"prompts x 8 completions; {outcome['n_test']} held-out images")
    for name, steps in outcome["reward_curves"].items():
        size = max(1, len(steps) // 4)
        parts = [f"{mean_of(steps[i:i + size], 'score'):.2f}"
                 for i in range(0, len(steps), size)]
        print(f"  {name:<8} score reward by quarter: {' '.join(parts)}; format reward "
              f"{mean_of(steps[:size], 'format'):.2f} -> {mean_of(steps[-size:], 'format'):.2f}")
    for name, key in (("before", "before"), ("true", "after_true"),
                      ("control", "after_control")):
        e = outcome["evaluations"][key]
        print(f"  held-out {name:<8} SRCC {fmt(e['srcc'])}  parsed {e['parsed_fraction']:.2f}  "
              f"released format {e['format_rate']:.2f}")
    true_gain = gain(outcome["srcc_before"], outcome["srcc_after"])
    control_gain = gain(outcome["control_srcc_before"], outcome["control_srcc_after"])
    print(f"true labels: SRCC {fmt(outcome['srcc_before'])} -> {fmt(outcome['srcc_after'])} "
          f"(gain {fmt(true_gain)})")
    print(f"shuffled labels (control): SRCC {fmt(outcome['control_srcc_before'])} -> "
          f"{fmt(outcome['control_srcc_after'])} (gain {fmt(control_gain)}); the shuffled "
          f"training labels' SRCC with the true ones {outcome['control_label_srcc']:+.3f}")
    met = (true_gain is not None and control_gain is not None and true_gain >= 0.2
           and outcome["srcc_after"] >= 0.3 and control_gain < 0.1)
    print(f"{GOALS}: {'met' if met else 'NOT met'}")
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in outcome["seconds"].items() if k != "total")
    print(f"{outcome['seconds']['total']:.0f} s in all ({phases}); "
          f"{outcome['cpu_seconds']:.0f} CPU s on {outcome['cores']} cores; load average "
          f"{outcome['load_average']['start']:.1f} at the start, "
          f"{outcome['load_average']['end']:.1f} at the end")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version (tests)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the warm start "
                                                            "and both GRPO runs")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--json", type=Path, help="also write the outcome as JSON here")
    args = parser.parse_args(argv)
    plan = replace(QUICK if args.quick else FULL, seed=args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="grpo-learns-"))
    try:
        outcome = experiment(plan, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report(outcome)
    if args.json:
        args.json.write_text(json.dumps(outcome, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
