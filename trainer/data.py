"""The multi-task training mix: score samples from a score task's train split (KonIQ), degradation
samples from a DQ-style meta JSON or qbench's synthetic generator, comparison samples from
DiffIQA pair JSON. All become qbench Samples (the records the evaluator reads), are checked
(every image present and readable), mixed and shuffled with a fixed seed, and handed to TRL as a
dataset whose rows carry the protocol prompt, the decoded images and the ground truth the reward
functions read.
"""
from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from qbench.core.protocol import build_messages, parse_choice
from qbench.core.records import Sample
from qbench.core.registry import get_task
from qbench.core.task import DataError, TaskData
from qbench.data.images import ImageError, load_image
from qbench.tasks._formats import drop_note, read_json_records, safe_path
from qbench.tasks.dq495k import read_dq_meta
from qbench.tasks.synthetic import FIT_PHOTOS, bundled_photo, generate
from qbench.trainer.config import (
    ComparisonSource,
    ConfigError,
    DataSettings,
    DegradationSource,
    EvalSettings,
    ScoreSource,
    TrainConfig,
)

SYNTHETIC_META = "train.json"


@dataclass
class TrainingData:
    samples: list[Sample]
    notes: list[str] = field(default_factory=list)
    # what makes a source differ from what it should hold (TaskData.problems, per source):
    # `train --check` exits 1 on any, training prints them and records them
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.samples))

    def mix(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))


# ------------------------------------------------------------------------------ readers

def read_comparison_pairs(pairs: Path, images: Path, task: str = "diffiqa") -> TaskData:
    """DiffIQA pair records {ref_image, ImageA, ImageB, result}; records without the three
    paths or with a result that is not Image A / Image B / Similar are dropped and counted."""
    samples, bad = [], 0
    records = read_json_records(pairs)
    for i, record in enumerate(records):
        try:
            paths = tuple(str(safe_path(images, str(record[key]), pairs))
                          for key in ("ref_image", "ImageA", "ImageB"))
            label = parse_choice(str(record["result"])).choice
        except (KeyError, TypeError):
            bad += 1
            continue
        if label is None:
            bad += 1
            continue
        samples.append(Sample(id=f"{i}:{record['ImageA']}|{record['ImageB']}", task=task,
                              kind="comparison", images=paths, choice=label))
    notes = drop_note(bad, "records without ref_image/ImageA/ImageB or with a result other "
                           "than Image A/Image B/Similar", pairs)
    return TaskData(samples, notes, source=str(pairs), split="train", rows_read=len(records),
                    rows_dropped=bad)


def score_samples(source: ScoreSource) -> TaskData:
    task = get_task(source.task)
    if task.kind != "score":
        raise ConfigError(f"data.score: task {source.task} answers {task.kind} questions, "
                          f"not score")
    if source.split not in task.splits:
        raise ConfigError(f"data.score: task {source.task} has no split {source.split!r} "
                          f"(has: {', '.join(task.splits)})")
    data = task.load_split(task.locate(None, source.folder), source.split)
    missing = sum(s.mos_norm is None for s in data.samples)
    if missing:
        data.notes.append(f"{source.task}: dropped {missing} samples without a [1, 5] score")
        data.samples = [s for s in data.samples if s.mos_norm is not None]
        data.rows_dropped += missing
    return data


def synthetic_folder(source: DegradationSource) -> Path:
    """The generated set, written on first use (generation replaces the folder, so it refuses
    a folder that holds something else)."""
    folder = source.synthetic
    assert folder is not None
    if not (folder / SYNTHETIC_META).exists():
        if folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"data.degradation.synthetic {folder} is not empty and holds no "
                              f"{SYNTHETIC_META}; give a new or empty folder to generate into")
        photos = source.synthetic_photos or [bundled_photo(*p) for p in FIT_PHOTOS]
        generate(folder, photos=photos,
                 seed=source.synthetic_seed, meta_name=SYNTHETIC_META,
                 crops_per_photo=source.synthetic_crops_per_photo)
    return folder


def degradation_samples(source: DegradationSource) -> TaskData:
    if source.synthetic is not None:
        folder = synthetic_folder(source)
        return read_dq_meta(folder, folder / SYNTHETIC_META, "synthetic-degradation")
    assert source.meta is not None
    return read_dq_meta(source.images or source.meta.parent, source.meta, "dq-train")


def comparison_samples(source: ComparisonSource) -> TaskData:
    return read_comparison_pairs(source.pairs, source.images or source.pairs.parent)


def check_eval_tasks(settings: EvalSettings, training: Sequence[Sample]) -> list[str]:
    """Every task of the periodic evaluation is known, has the split and loads: checked before
    training, not discovered at the first checkpoint. Returns a note for each task whose
    evaluation images are also training images (a held-out split that is not held out)."""
    trained = {Path(p).resolve() for s in training for p in s.images}
    run = settings.run_config()
    notes = []
    for name in run.tasks:
        task = get_task(name, run.task_options.get(name))
        split = run.split or task.default_split
        if split not in task.splits:
            raise ConfigError(f"eval: task {name} has no split {split!r} "
                              f"(has: {', '.join(task.splits)})")
        samples = task.load_split(task.locate(run.data_root, run.data_paths.get(name)),
                             split).samples
        shared = [s for s in samples if any(Path(p).resolve() in trained for p in s.images)]
        if shared:
            notes.append(f"eval: {len(shared)} of {len(samples)} {name} {split} samples are "
                         f"training images too (e.g. {shared[0].images[0]})")
    return notes


# ------------------------------------------------------------------------------ checking, mixing

def image_problem(path: str) -> str | None:
    """Why an image cannot be trained on, or None. A full decode: a truncated file found now
    costs one sample, found mid-run it would stop the run."""
    try:
        load_image(path)
        return None
    except ImageError:
        return "unreadable" if Path(path).exists() else "missing"


def check_images(samples: Sequence[Sample], workers: int = 8) -> tuple[list[Sample], list[str]]:
    """Drop samples whose images are missing or unreadable; a note counts them and names one."""
    paths = sorted({p for s in samples for p in s.images})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = zip(paths, pool.map(image_problem, paths), strict=True)
        problems = {p: why for p, why in found if why}
    if not problems:
        return list(samples), []
    kept = [s for s in samples if not any(p in problems for p in s.images)]
    counts = Counter(problems.values())
    example = next(iter(problems))
    note = (f"dropped {len(samples) - len(kept)} samples: " + ", ".join(
        f"{n} {why} images" for why, n in sorted(counts.items())) + f" (e.g. {example})")
    return kept, [note]


def collect_samples(settings: DataSettings) -> TrainingData:
    """Every configured source read, mixed, shuffled with `settings.seed`, cut to
    `settings.limit` and checked image by image."""
    parts = ([score_samples(s) for s in settings.score]
             + [degradation_samples(d) for d in settings.degradation]
             + [comparison_samples(c) for c in settings.comparison])
    notes = [note for part in parts for note in part.notes]
    problems = [f"{part.source}: {problem}" for part in parts for problem in part.problems()]
    for part in parts:
        if not part.samples:
            raise DataError(f"no usable samples in {part.source}")
    samples = [s for part in parts for s in part.samples]
    random.Random(settings.seed).shuffle(samples)
    if settings.limit is not None:
        samples = samples[:settings.limit]
    samples, dropped = check_images(samples)
    if not samples:
        raise DataError("no training samples left after checking the images")
    return TrainingData(samples, notes + dropped, problems)


# ------------------------------------------------------------------------------ TRL dataset

def sample_row(sample: Sample) -> dict[str, Any]:
    """A table row; every kind carries every ground-truth column (None where unused), so the
    reward functions of a mixed batch all find their keyword arguments."""
    return {"id": sample.id, "task": sample.task, "kind": sample.kind,
            "image_paths": list(sample.images), "mos_norm": sample.mos_norm,
            "distortion_class": sample.distortion_class, "severity": sample.severity,
            "choice": sample.choice}


def add_prompt_and_images(batch: dict[str, list], image_first: bool) -> dict[str, list]:
    """Row transform applied when TRL reads a row: the protocol's chat messages for the row's
    kind and its images decoded to RGB, in placeholder order."""
    return batch | {
        "prompt": [build_messages(kind, image_first=image_first) for kind in batch["kind"]],
        "images": [[load_image(p) for p in paths] for paths in batch["image_paths"]]}


def to_dataset(samples: Sequence[Sample], image_first: bool = True):  # -> datasets.Dataset
    """A datasets.Dataset of the samples; prompts and images are produced per row on access,
    so the table holds paths and labels only."""
    from datasets import Dataset
    rows = [sample_row(s) for s in samples]
    table = Dataset.from_dict({key: [r[key] for r in rows] for key in rows[0]})
    return table.with_transform(functools.partial(add_prompt_and_images, image_first=image_first))


def prepare_data(config: TrainConfig, console: Console) -> TrainingData:
    """The training mix, checked against the evaluation tasks when evaluation is on; its notes
    (dropped rows and images, evaluation images seen in training) are printed."""
    data = collect_samples(config.data)
    if config.eval.every:
        data.notes += check_eval_tasks(config.eval, data.samples)
    for note in data.notes:
        console.print(f"[yellow]{note}[/]", soft_wrap=True)
    for problem in data.problems:
        console.print(f"[red]training data differs from what it should hold:[/] {problem}",
                      soft_wrap=True)
    return data
