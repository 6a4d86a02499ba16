"""Does `qbench train` make a model better? One CPU run with a fixed seed, through the rewards,
data path and evaluator users get.

1. Images whose quality a tiny vision tower can see: crops of the photographs bundled with
   scikit-image, darkened to three quality levels (1: gain 0.2, 3: gain 0.45, 5: untouched);
   the level is the [1, 5] ground truth. Training crops come from qbench's fitting photographs,
   the held-out test crops from its test photographs: no photograph is in both. They are
   written as a score task registered from this script (`grpo-learns-brightness`, splits
   train and test), which `data.score` and `qbench run` read like any other.
2. A tiny random Qwen2.5-VL (qbench.tiny) learns the answer *format* only: supervised steps on
   the released layout `<think>\\nok\\n</think>\\n<answer>\\n{"rating": R}\\n</answer>` with R
   drawn at random from the levels, independently of the image. It answers in format, at
   random.
3. `qbench train --config …` (the CLI, in this process): the recipe's format reward (strict)
   and score reward (|rating − level| < 0.35, the released reading), N = 8, loss "grpo",
   β = 1e-3, top_k 50, temperature 1; learning rate, steps, batch and completion length are
   sized for a 0.4 M-parameter model on a CPU.
4. `qbench run` (qbench.runner.run, the `qinsight` adapter and its default decoding) on the
   held-out test split, before (the warm-started model) and after (output_dir/final).

Printed: the mean reward per step (total, format, score), the held-out SRCC before → after
and the share of held-out answers in the released format.

    OMP_NUM_THREADS=1 python benchmarks/grpo_learns.py            # the experiment, ~5 minutes
    OMP_NUM_THREADS=1 python benchmarks/grpo_learns.py --quick    # about a minute (the tests)

What it shows on this 2-core CPU (shared with other work when measured, 275 s): the format
reward climbs (0.88 over the first 15 steps → 0.98-1.00 over the last), the score reward does
not (0.31 → 0.31; chance is 1/3) and held-out SRCC stays at chance (-0.03 → 0.03). The
trainer optimises the recipe's reward, but within this budget the tiny model does not learn to
see quality through it. Why, as far as separate probes on the same warm-started model showed:
REINFORCE on the rating token alone (the same 4 prompts × 8 samples, Adam 1e-3) starts using
the image after 50-150 steps (accuracy 0.33 → 0.45-0.5); the same update applied to the whole
completion, as GRPO and the recipe's "grpo" loss do, did not in 150 steps in six runs, with a
KL term (β 0.1, 0.5) or without. The tokens after the rating (".00}", "</answer>") carry the
negative advantages of wrong ratings; on a 0.4 M-parameter model with a near-zero image
signal, pushing them down competes with, and wins over, learning the rating from the image.
In `qbench train` itself, a lower learning rate, 8 prompts per step, two levels, flat grey
images and num_iterations 2 did not change this within 120-150 steps; top_k 3 and TRL's
entropy mask (top_entropy_quantile 0.05) broke the format instead.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from qbench import Sample, Task, TaskData, register_task
from qbench.protocol import build_messages

TASK = "grpo-learns-brightness"
LEVEL_GAINS = {1: 0.2, 3: 0.45, 5: 1.0}    # quality level → brightness multiplier
IMAGE_SIZE = 56                              # 56 x 56: 4 image tokens for the tiny model
THINK = "ok"


@register_task
class Brightness(Task):
    """Darkened crops of bundled photographs; ground truth the quality level (1, 3 or 5)."""

    name = TASK
    kind = "score"
    description = "grpo_learns.py: darkened photograph crops, level 1-5"
    splits = ("train", "test")
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
    train_photos: int        # of qbench's fitting photographs
    train_crops: int         # per photograph (each at every level)
    test_photos: int         # of qbench's test photographs
    test_crops: int
    warm_steps: int          # supervised format steps, batch 8
    warm_lr: float
    grpo_steps: int
    prompts_per_step: int    # × 8 completions
    grpo_lr: float
    seed: int = 0


FULL = Plan(train_photos=10, train_crops=6, test_photos=10, test_crops=2, warm_steps=800,
            warm_lr=5e-3, grpo_steps=150, prompts_per_step=4, grpo_lr=1e-3)
QUICK = Plan(train_photos=3, train_crops=2, test_photos=4, test_crops=1, warm_steps=150,
             warm_lr=5e-3, grpo_steps=36, prompts_per_step=4, grpo_lr=1e-3)


# ------------------------------------------------------------------------------ data

def darkened_crops(photo: Path, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    from qbench.tasks.synthetic import crops
    return [np.asarray(Image.fromarray(c).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
            for c in crops(photo, count, 128, rng)]


def write_split(folder: Path, split: str, photos: list[Path], crops_per_photo: int,
                seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for photo in photos:
        for k, crop in enumerate(darkened_crops(photo, crops_per_photo, rng)):
            for level, gain in LEVEL_GAINS.items():
                name = f"images/{split}_{photo.stem}_{k}_level{level}.png"
                dark = np.clip(crop.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
                Image.fromarray(dark).save(folder / name)
                records.append({"image": name, "level": level})
    (folder / f"{split}.json").write_text(json.dumps(records), encoding="utf-8")
    return records


def write_task(folder: Path, plan: Plan) -> list[dict]:
    """The train and test splits; returns the training records."""
    from qbench.tasks.synthetic import FIT_PHOTOS, TEST_PHOTOS, bundled_photo
    train = [bundled_photo(*p) for p in FIT_PHOTOS[:plan.train_photos]]
    test = [bundled_photo(*p) for p in TEST_PHOTOS[:plan.test_photos]]
    records = write_split(folder, "train", train, plan.train_crops, plan.seed)
    write_split(folder, "test", test, plan.test_crops, plan.seed + 1)
    return records


# ------------------------------------------------------------------------------ format warm start

def answer_text(rating: float) -> str:
    return f'<think>\n{THINK}\n</think>\n<answer>\n{{"rating": {rating:.2f}}}\n</answer>'


def warm_start(base: Path, out: Path, folder: Path, records: list[dict], plan: Plan) -> Path:
    """Supervised steps on the answer layout with a rating drawn at random from the levels for
    every example: the model learns the format and nothing about quality."""
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
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / plan.warm_steps)
    for _ in range(plan.warm_steps):
        batch = [rng.choice(records) for _ in range(8)]
        ratings = [rng.choice(list(LEVEL_GAINS)) for _ in batch]   # independent of the image
        images = [Image.open(folder / r["image"]).convert("RGB") for r in batch]
        inputs = processor(text=[prompt + answer_text(r) + tokenizer.eos_token for r in ratings],
                           images=images, return_tensors="pt", padding=True)
        prompt_tokens = len(processor(text=[prompt], images=images[:1])["input_ids"][0])
        labels = inputs["input_ids"].clone()
        labels[:, :prompt_tokens] = -100
        labels[inputs["attention_mask"] == 0] = -100
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        decay.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------ train, evaluate

def grpo_config(model: Path, folder: Path, output_dir: Path, plan: Plan) -> dict:
    """The recipe (trainer/config.py defaults) with what a CPU and a tiny model need."""
    return {
        "model": {"path": str(model), "dtype": "float32", "min_pixels": None,
                  "max_pixels": None},
        "data": {"score": [{"task": TASK, "folder": str(folder), "split": "train"}],
                 "seed": plan.seed},
        "grpo": {"per_device_train_batch_size": 8 * plan.prompts_per_step,
                 "gradient_accumulation_steps": 1, "max_steps": plan.grpo_steps,
                 "save_steps": plan.grpo_steps, "learning_rate": plan.grpo_lr,
                 "lr_scheduler_type": "constant", "max_completion_length": 40,
                 "bf16": False, "use_cpu": True, "seed": plan.seed},
        "output_dir": str(output_dir), "resume": "never"}


def train(config_path: Path) -> None:
    from qbench.cli import main as qbench_main
    code = qbench_main(["train", "--config", str(config_path)])
    if code != 0:
        raise SystemExit(f"qbench train exited with {code}")


def evaluate(model: Path, folder: Path, results: Path, name: str) -> dict:
    """`qbench run`'s metrics on the held-out split, plus the share of its answers in the
    released format (the format reward's test, read from predictions.jsonl)."""
    from qbench.protocol import format_ok
    from qbench.runner import RunConfig, run
    result = run(RunConfig(model="qinsight", tasks=[TASK], model_path=model,
                           model_options={"max_new_tokens": 40}, data_paths={TASK: folder},
                           split="test", batch_size=16, output_dir=results, run_name=name,
                           device="cpu", workers=0, progress=False))
    (outcome,) = result.outcomes
    if outcome.metrics is None:
        raise SystemExit(f"qbench run skipped {TASK}: {outcome.skipped}")
    rows = [json.loads(line) for line in
            (result.run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    in_format = [format_ok(r.get("text") or "", strict=True) for r in rows]
    return {**outcome.metrics, "format_rate": sum(in_format) / len(in_format)}


@dataclass
class Outcome:
    steps: list[dict]          # per step: reward, format, score (means over the completions)
    before: dict
    after: dict
    seconds: float


def step_rewards(output_dir: Path, steps: int) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    return [{"step": h["step"], "reward": h["reward"],
             "format": h["rewards/format_reward/mean"], "score": h["rewards/score_reward/mean"]}
            for h in state["log_history"] if "reward" in h]


def experiment(plan: Plan, work: Path) -> Outcome:
    import torch

    from qbench.tiny import build_tiny_qwen2_5_vl
    torch.set_num_threads(1)
    start = time.perf_counter()
    folder = work / "brightness"
    records = write_task(folder, plan)
    base = build_tiny_qwen2_5_vl(work / "tiny", seed=plan.seed)
    warm = warm_start(base, work / "warm", folder, records, plan)
    before = evaluate(warm, folder, work / "results", "before")
    config = work / "grpo.yaml"
    config.write_text(yaml.safe_dump(grpo_config(warm, folder, work / "run", plan)))
    train(config)
    after = evaluate(work / "run" / "final", folder, work / "results", "after")
    return Outcome(step_rewards(work / "run", plan.grpo_steps), before, after,
                   time.perf_counter() - start)


def mean_of(steps: list[dict], key: str) -> float:
    return statistics.fmean(s[key] for s in steps)


def report(outcome: Outcome, plan: Plan) -> None:
    print(f"{'step':>4}  {'reward':>6}  {'format':>6}  {'score':>6}")
    for s in outcome.steps:
        print(f"{s['step']:>4}  {s['reward']:6.3f}  {s['format']:6.3f}  {s['score']:6.3f}")
    tenth = max(1, len(outcome.steps) // 10)
    first, last = outcome.steps[:tenth], outcome.steps[-tenth:]
    for key in ("reward", "format", "score"):
        print(f"mean {key} over the first {tenth} steps {mean_of(first, key):.3f}, "
              f"last {tenth} steps {mean_of(last, key):.3f}")
    for name, metrics in (("before", outcome.before), ("after", outcome.after)):
        print(f"held-out {name}: n {metrics['n']}, parsed {metrics['parsed_fraction']:.2f}, "
              f"released format {metrics['format_rate']:.2f}, SRCC {metrics.get('srcc')}")
    print(f"SRCC before -> after: {outcome.before.get('srcc')} -> {outcome.after.get('srcc')}")
    print(f"{outcome.seconds:.0f} s in all (seed {plan.seed})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version (tests)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--json", type=Path, help="also write the outcome as JSON here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    work = args.keep or Path(tempfile.mkdtemp(prefix="grpo-learns-"))
    try:
        outcome = experiment(plan, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report(outcome, plan)
    if args.json:
        args.json.write_text(json.dumps(outcome.__dict__, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
