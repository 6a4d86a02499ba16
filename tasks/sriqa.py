"""SRIQA-Bench: 100 groups of one low-resolution reference (`LRImages/x<k>_Original.png`) and
super-resolved outputs (`images/<Method>/x<k>_<Method>x4.png`), rated per group in `MOS/`,
`MOS_Reg/` (regression SR) and `MOS_Gen/` (generative SR): one `x<k>.txt` per group, lines
`name.png,score` (REFERENCE §2).

Two tasks read the same folder:
  sriqa          a score model rates each image; pairwise accuracy inside each group follows
                 (Acc over MOS/, Reg-Acc over MOS_Reg/, Gen-Acc over MOS_Gen/), plus PLCC/SRCC
  sriqa-compare  a comparison model sees (reference, Image A, Image B) for every pair of a
                 group, in both orders; the two answers are combined into one verdict per pair,
                 which cancels position bias, and how often the orders agree is reported
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from qbench import DataError, Prediction, Sample, Task, TaskData, register_task
from qbench.metrics import orient, pair_order, pairwise_accuracy
from qbench.task import ModelConvention

from ._formats import check_inside, drop_note, index_images, read_name_scores, relative_id, rescale

# metric name -> MOS folder. The first is the full set that ground truth is taken from.
SUBSETS = {"acc": "MOS", "reg_acc": "MOS_Reg", "gen_acc": "MOS_Gen"}
SR_NAME = re.compile(r"x\d+_(.+?)x4\.\w+", re.IGNORECASE)   # x<k>_<Method>x4.png


@dataclass
class Bench:
    """The folder as read: per group, per MOS folder, image name -> score."""

    folder: Path
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def image(self, name: str) -> Path:
        """Where an image named in a MOS file lies: found by name, else where the layout puts it."""
        found = self.images.get(name.lower())
        if found:
            return found
        match = SR_NAME.fullmatch(name)
        if match:
            path = self.folder / "images" / match.group(1) / name
        else:
            path = self.folder / ("LRImages" if name.lower().endswith("_original.png") else "images") / name
        return check_inside(self.folder, path, self.folder / "MOS*", name)

    def reference(self, group: str) -> Path:
        return self.image(f"{group}_Original.png")

    def truth(self, group: str, name: str) -> float:
        """An image's MOS: from MOS/ where it is listed there, else from its subset file."""
        return next(scores[name] for scores in self.groups[group].values() if name in scores)


def read_bench(folder: Path) -> Bench:
    if not (folder / SUBSETS["acc"]).is_dir():
        raise DataError(f"sriqa: no MOS/ folder of per-group score files in {folder}")
    bench = Bench(folder, images=index_images([folder / "images", folder / "LRImages"]))
    for subset in SUBSETS.values():
        dropped = 0
        for file in sorted((folder / subset).glob("*.txt")):
            entries = read_name_scores(file)
            scores = {name: score for name, score in entries if score is not None}
            dropped += len(entries) - len(scores)
            bench.groups.setdefault(file.stem, {})[subset] = scores
        bench.notes += drop_note(dropped, "lines without a numeric score", folder / subset)
    if not any(scores for by_subset in bench.groups.values() for scores in by_subset.values()):
        raise DataError(f"sriqa: no 'name,score' lines in {folder}/MOS*/ *.txt")
    return bench


class _SRIQA(Task):
    splits = ("test",)
    folders = ("sriqa", "SRIQA-Bench")
    markers = ("MOS",)


@register_task
class SRIQA(_SRIQA):
    name = "sriqa"
    kind = "score"
    description = "SRIQA-Bench super-resolution groups, scored: Reg-Acc/Gen-Acc/Acc + PLCC/SRCC"
    expected_count = {"test": 1100}

    def load(self, folder: Path, split: str) -> TaskData:
        bench = read_bench(folder)
        entries = [(group, name) for group, by_subset in sorted(bench.groups.items())
                   for name in dict.fromkeys(n for scores in by_subset.values() for n in scores)]
        truths = [bench.truth(g, n) for g, n in entries]
        norms = rescale(truths, lower_better=False)   # 0-100 per group, min/max over the set
        samples = [Sample(id=f"{group}/{name}", task=self.name, kind="score",
                          images=(str(bench.image(name)),), mos=mos, mos_norm=norm, group=group,
                          meta={"mos_by_subset": {s: scores[name] for s, scores in
                                                  bench.groups[group].items() if name in scores}})
                   for (group, name), mos, norm in zip(entries, truths, norms)]
        return TaskData(samples, bench.notes, source=f"SRIQA-Bench {folder}")

    def evaluate(self, samples: Sequence[Sample], predictions: dict[str, Prediction],
                 model: ModelConvention) -> dict[str, Any]:
        summary = super().evaluate(samples, predictions, model)
        for key, subset in SUBSETS.items():
            right = pairs = 0
            for members in _members(samples, subset).values():
                gt = [s.meta["mos_by_subset"][subset] for s in members]
                pred = [_score(predictions.get(s.id)) for s in members]
                answered = [i for i, p in enumerate(pred) if p is not None]
                # pairs with an unanswered image stay in the denominator: they count as wrong
                pairs += len(members) * (len(members) - 1) // 2
                right += pairwise_accuracy([gt[i] for i in answered],
                                           orient([pred[i] for i in answered], model.lower_better))[0]
            summary[key] = right / pairs if pairs else None
            summary[f"{key}_pairs"] = pairs
        return summary


def _members(samples: Sequence[Sample], subset: str) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        if subset in s.meta["mos_by_subset"]:
            groups.setdefault(s.group or "", []).append(s)
    return groups


def _score(prediction: Prediction | None) -> float | None:
    return prediction.score if prediction is not None and prediction.ok else None


# Each answer as a vote on "is the pair's first image better?": +1 yes, -1 no, 0 similar.
VOTES = {("AB", "Image A"): 1, ("AB", "Image B"): -1, ("BA", "Image A"): -1, ("BA", "Image B"): 1}
CHOICE_OF_ORDER = {1.0: "Image A", 0.0: "Image B", 0.5: "Similar"}


@register_task
class SRIQACompare(_SRIQA):
    name = "sriqa-compare"
    kind = "comparison"
    description = "SRIQA-Bench pairs for comparison models, both orders: Reg-Acc/Gen-Acc/Acc"

    def load(self, folder: Path, split: str) -> TaskData:
        bench = read_bench(folder)
        samples = []
        for group, by_subset in sorted(bench.groups.items()):
            names = list(dict.fromkeys(n for scores in by_subset.values() for n in scores))
            for first, second in combinations(names, 2):
                truth = {subset: pair_order(scores[first], scores[second])
                         for subset, scores in by_subset.items() if first in scores and second in scores}
                if not truth:
                    continue   # never rated in the same file: not a benchmark pair
                gt = next(iter(truth.values()))
                pair = f"{group}/{first}|{second}"
                for order, (a, b), choice in (("AB", (first, second), CHOICE_OF_ORDER[gt]),
                                              ("BA", (second, first), CHOICE_OF_ORDER[1.0 - gt])):
                    samples.append(Sample(
                        id=f"{pair}/{order}", task=self.name, kind="comparison",
                        images=(str(bench.reference(group)), str(bench.image(a)), str(bench.image(b))),
                        choice=choice, group=group,
                        meta={"pair": pair, "order": order, "truth_by_subset": truth,
                              "a": relative_id(bench.image(a), folder),
                              "b": relative_id(bench.image(b), folder)}))
        return TaskData(samples, bench.notes, source=f"SRIQA-Bench {folder}")

    def evaluate(self, samples: Sequence[Sample], predictions: dict[str, Prediction],
                 model: ModelConvention) -> dict[str, Any]:
        summary = super().evaluate(samples, predictions, model)   # per asked sample: accuracy
        votes: dict[str, dict[str, int]] = {}
        truth: dict[str, dict[str, float]] = {}
        for s in samples:
            truth[s.meta["pair"]] = s.meta["truth_by_subset"]
            p = predictions.get(s.id)
            if p is not None and p.ok and p.choice is not None:
                vote = VOTES.get((s.meta["order"], p.choice), 0)
                votes.setdefault(s.meta["pair"], {})[s.meta["order"]] = vote
        verdict = {pair: pair_order(sum(v.values()), 0) for pair, v in votes.items()}
        for key, subset in SUBSETS.items():
            rated = [pair for pair, t in truth.items() if subset in t]
            right = sum(verdict.get(pair) == truth[pair][subset] for pair in rated)
            summary[key] = right / len(rated) if rated else None
            summary[f"{key}_pairs"] = len(rated)
        both = [v for v in votes.values() if len(v) == 2]
        summary["order_agreement"] = (float(np.mean([v["AB"] == v["BA"] for v in both]))
                                      if both else None)
        summary["pairs_both_orders"] = len(both)
        return summary
