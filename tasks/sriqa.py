"""SRIQA-Bench (A-FINE release): 100 groups. Each group is one low-resolution input
(`LRImages/x<k>_Original.png`), its high-resolution original (`images/Original/x<k>_Original.png`)
and ten super-resolved outputs (`images/<Method>/x<k>_<Method>x4.png`), rated per group in
`MOS/` (all), `MOS_Reg/` (regression SR) and `MOS_Gen/` (generative SR): one `x<k>.txt` per
group, lines `name.png,score` (A-FINE's reader also takes a space as the separator).
The two files share a name: the LR input is never looked up by name among the candidates.

Two tasks read the same folder:
  sriqa          a score model rates each image; pairwise accuracy inside each group follows
                 (Acc over MOS/, Reg-Acc over MOS_Reg/, Gen-Acc over MOS_Gen/), plus PLCC/SRCC
  sriqa-compare  a comparison model sees (reference = the LR input, Image A, Image B) for every
                 pair of a group, as Q-Insight does without the HR ground truth. qbench asks each
                 pair in both orders and combines the two answers into one verdict, which cancels
                 position bias (`acc`, `order_agreement`); `acc_one_order` scores the first order
                 alone (the pair as the MOS file lists it), the setting of the paper.

The rated HR original is a candidate like the SR outputs by default: Q-Insight's printed Table 6
accuracies are multiples of 1/300, 1/3600 and 1/5500 (e.g. Reg-Acc 85.67 = 257/300), which is
C(3,2), C(9,2) and C(11,2) pairs per group over 100 groups: the original included. The task
option `include_original=false` keeps the SR outputs only.
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
ORIGINAL = "Original"


def is_original(name: str) -> bool:
    return Path(name).stem.lower().endswith("_" + ORIGINAL.lower())


@dataclass(frozen=True)
class SRIQAOptions:
    include_original: bool = True


@dataclass
class Bench:
    """The folder as read: per group, per MOS folder, image name -> score."""

    folder: Path
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)   # candidates, under images/ only
    notes: list[str] = field(default_factory=list)
    lines: int = 0
    dropped: int = 0

    def image(self, name: str) -> Path:
        """Where a candidate named in a MOS file lies: found by name under images/, else where
        the layout puts it (images/<Method>/, images/Original/)."""
        found = self.images.get(name.lower())
        if found:
            return found
        match = SR_NAME.fullmatch(name)
        method = match.group(1) if match else ORIGINAL if is_original(name) else ""
        path = self.folder / "images" / method / name
        return check_inside(self.folder, path, self.folder / "MOS*", name)

    def reference(self, group: str) -> Path:
        """The low-resolution input of a group: the comparison's reference."""
        return self.folder / "LRImages" / f"{group}_{ORIGINAL}.png"

    def truth(self, group: str, name: str) -> float:
        """An image's MOS: from MOS/ where it is listed there, else from its subset file."""
        return next(scores[name] for scores in self.groups[group].values() if name in scores)

    def candidates(self, group: str, include_original: bool) -> list[str]:
        """The rated images of a group in the order the MOS files list them."""
        names = dict.fromkeys(n for scores in self.groups[group].values() for n in scores)
        return [n for n in names if include_original or not is_original(n)]


def read_bench(folder: Path) -> Bench:
    if not (folder / SUBSETS["acc"]).is_dir():
        raise DataError(f"sriqa: no MOS/ folder of per-group score files in {folder}")
    bench = Bench(folder, images=index_images([folder / "images"]))
    for subset in SUBSETS.values():
        dropped = 0
        for file in sorted((folder / subset).glob("*.txt")):
            entries = read_name_scores(file)
            scores = {name: score for name, score in entries if score is not None}
            bench.lines += len(entries)
            dropped += len(entries) - len(scores)
            bench.groups.setdefault(file.stem, {})[subset] = scores
        bench.dropped += dropped
        bench.notes += drop_note(dropped, "lines without a numeric score", folder / subset)
    if not any(scores for by_subset in bench.groups.values() for scores in by_subset.values()):
        raise DataError(f"sriqa: no 'name,score' lines in {folder}/MOS*/ *.txt")
    return bench


class _SRIQA(Task):
    splits = ("test",)
    folders = ("sriqa", "SRIQA-Bench")
    markers = ("MOS",)
    Options = SRIQAOptions

    def bench_data(self, bench: Bench, samples: list[Sample], expected: int) -> TaskData:
        kept = "the HR original and the SR outputs" if self.options.include_original \
            else "the SR outputs only (include_original=false)"
        return TaskData(samples, bench.notes, source=f"SRIQA-Bench {bench.folder}", split="test",
                        split_source=f"every group of MOS/ ({len(bench.groups)}), candidates: {kept}",
                        expected_count=expected if self.options.include_original else None,
                        rows_read=bench.lines, rows_dropped=bench.dropped,
                        options=self.option_values(), mos_range=(0.0, 100.0))


@register_task
class SRIQA(_SRIQA):
    name = "sriqa"
    kind = "score"
    description = "SRIQA-Bench super-resolution groups, scored: Reg-Acc/Gen-Acc/Acc + PLCC/SRCC"
    expected_count = {"test": 1100}

    def load(self, folder: Path, split: str) -> TaskData:
        bench = read_bench(folder)
        entries = [(group, name) for group in sorted(bench.groups)
                   for name in bench.candidates(group, self.options.include_original)]
        truths = [bench.truth(g, n) for g, n in entries]
        norms = rescale(truths, lower_better=False)   # 0-100 per group, min/max over the set
        samples = [Sample(id=f"{group}/{name}", task=self.name, kind="score",
                          images=(str(bench.image(name)),), mos=mos, mos_norm=norm, group=group,
                          meta={"mos_by_subset": {s: scores[name] for s, scores in
                                                  bench.groups[group].items() if name in scores}})
                   for (group, name), mos, norm in zip(entries, truths, norms)]
        return self.bench_data(bench, samples, self.expected_count["test"])

    def evaluate(self, samples: Sequence[Sample], predictions: dict[str, Prediction],
                 model: ModelConvention, lower_better: bool = False) -> dict[str, Any]:
        summary = super().evaluate(samples, predictions, model, lower_better)
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
    description = ("SRIQA-Bench pairs for comparison models (reference: the LR input), both "
                   "orders: Reg-Acc/Gen-Acc/Acc")
    expected_count = {"test": 2 * 55 * 100}

    def load(self, folder: Path, split: str) -> TaskData:
        bench = read_bench(folder)
        samples = []
        for group in sorted(bench.groups):
            by_subset = bench.groups[group]
            reference = str(bench.reference(group))
            for first, second in combinations(bench.candidates(group, self.options.include_original), 2):
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
                        images=(reference, str(bench.image(a)), str(bench.image(b))),
                        choice=choice, group=group,
                        meta={"pair": pair, "order": order, "truth_by_subset": truth,
                              "a": relative_id(bench.image(a), folder),
                              "b": relative_id(bench.image(b), folder)}))
        return self.bench_data(bench, samples, self.expected_count["test"])

    def evaluate(self, samples: Sequence[Sample], predictions: dict[str, Prediction],
                 model: ModelConvention, lower_better: bool = False) -> dict[str, Any]:
        summary = super().evaluate(samples, predictions, model, lower_better)
        votes: dict[str, dict[str, int]] = {}
        truth: dict[str, dict[str, float]] = {}
        for s in samples:
            truth[s.meta["pair"]] = s.meta["truth_by_subset"]
            p = predictions.get(s.id)
            if p is not None and p.ok and p.choice is not None:
                vote = VOTES.get((s.meta["order"], p.choice), 0)
                votes.setdefault(s.meta["pair"], {})[s.meta["order"]] = vote
        both = {pair: pair_order(sum(v.values()), 0) for pair, v in votes.items()}
        first = {pair: pair_order(v["AB"], 0) for pair, v in votes.items() if "AB" in v}
        for key, subset in SUBSETS.items():
            rated = [pair for pair, t in truth.items() if subset in t]
            for name, verdict in ((key, both), (f"{key}_one_order", first)):
                right = sum(verdict.get(pair) == truth[pair][subset] for pair in rated)
                summary[name] = right / len(rated) if rated else None
            summary[f"{key}_pairs"] = len(rated)
        paired = [v for v in votes.values() if len(v) == 2]
        summary["order_agreement"] = (float(np.mean([v["AB"] == v["BA"] for v in paired]))
                                      if paired else None)
        summary["pairs_both_orders"] = len(paired)
        return summary
