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
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from qbench import DataError, Sample, Task, TaskData, register_task
from qbench.results.tables import set_default_tasks
from qbench.scoring.formulas import orient, pair_order, pairwise_accuracy
from qbench.scoring.metrics import Scored, group_accuracy, metric
from qbench.tasks._formats import (
    check_inside,
    drop_note,
    index_images,
    read_name_scores,
    relative_id,
    rescale,
)

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
                        split_source=f"every group of MOS/ ({len(bench.groups)}), "
                                     f"candidates: {kept}",
                        expected_count=expected if self.options.include_original else None,
                        rows_read=bench.lines, rows_dropped=bench.dropped,
                        options=self.option_values(), mos_range=(0.0, 100.0))


@register_task
class SRIQA(_SRIQA):
    name = "sriqa"
    kind = "score"
    description = "SRIQA-Bench super-resolution groups, scored: Reg-Acc/Gen-Acc/Acc + PLCC/SRCC"
    expected_count = {"test": 1100}
    truth_meta = ("mos_by_subset",)

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
                   for (group, name), mos, norm in zip(entries, truths, norms, strict=True)]
        return self.bench_data(bench, samples, self.expected_count["test"])



# ------------------------------------------------------------------------------ score metrics
# Acc / Reg-Acc / Gen-Acc pool the pairs of every group; intervals resample whole groups.

def group_pairs(s: Scored, subset: str) -> tuple[list[str], list[int], list[int]]:
    """Per group of the task: (group, right pairs, pairs). A pair with an unanswered image
    stays in the denominator: it counts as wrong."""
    members: dict[str, list[Sample]] = {}
    for x in s.samples:
        if subset in x.meta["mos_by_subset"]:
            members.setdefault(x.group or "", []).append(x)
    groups, right, total = [], [], []
    for group, samples in sorted(members.items()):
        gt = [x.meta["mos_by_subset"][subset] for x in samples]
        pred = [p.score if (p := s.answer(x)) else None for x in samples]
        answered = {i: v for i, v in enumerate(pred) if v is not None}
        oriented = orient(list(answered.values()), s.conventions.model_lower_better)
        groups.append(group)
        right.append(pairwise_accuracy([gt[i] for i in answered], oriented)[0])
        total.append(len(samples) * (len(samples) - 1) // 2)
    return groups, right, total


def _pooled(counts: tuple[list[str], list[int], list[int]]) -> float | None:
    _, right, total = counts
    return sum(right) / sum(total) if sum(total) else None


def _score_metrics(key: str, subset: str) -> None:
    """`key`: the accuracy pooled over `subset`'s groups; `key`_pairs: its pair count."""
    metric(key, kinds={"score"}, tasks={"sriqa"},
           resample=lambda s: group_accuracy(*group_pairs(s, subset)))(
        lambda s: _pooled(group_pairs(s, subset)))
    metric(f"{key}_pairs", kinds={"score"}, tasks={"sriqa"}, headline=False)(
        lambda s: sum(group_pairs(s, subset)[2]))


for _key, _subset in SUBSETS.items():
    _score_metrics(_key, _subset)


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
    truth_meta = ("pair", "order", "truth_by_subset")

    def load(self, folder: Path, split: str) -> TaskData:
        bench = read_bench(folder)
        samples = []
        for group in sorted(bench.groups):
            by_subset = bench.groups[group]
            reference = str(bench.reference(group))
            candidates = bench.candidates(group, self.options.include_original)
            for first, second in combinations(candidates, 2):
                truth = {subset: pair_order(scores[first], scores[second])
                         for subset, scores in by_subset.items()
                         if first in scores and second in scores}
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


# ------------------------------------------------------------------------------ comparison metrics

def pair_votes(s: Scored) -> tuple[dict[str, dict[str, int]], dict[str, tuple[str, dict]]]:
    """Per pair: the vote of each order answered ({"AB": +1, "BA": -1, ...}), and its group and
    ground truth by subset."""
    votes: dict[str, dict[str, int]] = {}
    truth: dict[str, tuple[str, dict]] = {}
    for x in s.samples:
        pair = x.meta["pair"]
        truth[pair] = (x.group or "", x.meta["truth_by_subset"])
        p = s.answer(x)
        if p is not None and p.choice is not None:
            votes.setdefault(pair, {})[x.meta["order"]] = VOTES.get((x.meta["order"], p.choice), 0)
    return votes, truth


def verdict_counts(s: Scored, subset: str, one_order: bool
                   ) -> tuple[list[str], list[int], list[int]]:
    """Per group: (group, pairs judged right, pairs rated in `subset`). Both orders: the votes
    are summed into one verdict; one order: the first order's answer alone."""
    votes, truth = pair_votes(s)
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for pair, (group, by_subset) in truth.items():
        if subset not in by_subset:
            continue
        cast = votes.get(pair, {})
        verdict = (pair_order(cast["AB"], 0) if "AB" in cast else None) if one_order else \
            (pair_order(sum(cast.values()), 0) if cast else None)
        total[group] = total.get(group, 0) + 1
        right[group] = right.get(group, 0) + (verdict == by_subset[subset])
    groups = sorted(total)
    return groups, [right[g] for g in groups], [total[g] for g in groups]


def _comparison_accuracy(name: str, subset: str, one_order: bool) -> None:
    metric(name, kinds={"comparison"}, tasks={"sriqa-compare"},
           resample=lambda s: group_accuracy(*verdict_counts(s, subset, one_order)))(
        lambda s: _pooled(verdict_counts(s, subset, one_order)))


def _comparison_metrics(key: str, subset: str) -> None:
    """`key`: the accuracy of both orders' votes on `subset`, `key`_one_order: of the first
    order's alone; `key`_pairs: the pairs rated in `subset`."""
    _comparison_accuracy(key, subset, one_order=False)
    _comparison_accuracy(f"{key}_one_order", subset, one_order=True)
    metric(f"{key}_pairs", kinds={"comparison"}, tasks={"sriqa-compare"}, headline=False)(
        lambda s: sum(verdict_counts(s, subset, False)[2]))


for _key, _subset in SUBSETS.items():
    _comparison_metrics(_key, _subset)


@metric("order_agreement", kinds={"comparison"}, tasks={"sriqa-compare"}, headline=False)
def _order_agreement(s: Scored) -> float | None:
    """How often the two orders of a pair got the same verdict (position bias shows here)."""
    both = [v for v in pair_votes(s)[0].values() if len(v) == 2]
    return float(np.mean([v["AB"] == v["BA"] for v in both])) if both else None


@metric("pairs_both_orders", kinds={"comparison"}, tasks={"sriqa-compare"}, headline=False)
def _pairs_both_orders(s: Scored) -> int:
    return sum(len(v) == 2 for v in pair_votes(s)[0].values())


set_default_tasks("sriqa", ("sriqa", "sriqa-compare"))   # Q-Insight's table of this set
