"""The common shape of the score benchmarks: a task reads either the DeQA-Score meta file of
the requested split (what Q-Insight tested on, preferred where present) or the dataset's native
release files, and turns rows into samples with raw and [1, 5] ground truth."""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from qbench import DataError, Sample, Task, TaskData

from ._formats import (
    ScoreRow,
    check_inside,
    drop_note,
    find_meta,
    read_deqa,
    relative_id,
    rescale,
    usable_score,
)


class ScoreTask(Task):
    """Subclasses declare the class attributes and `read_native`."""

    kind = "score"
    deqa_key: ClassVar[str]                            # test_<key>_*.json
    native_files: ClassVar[tuple[str, ...]]            # any one marks the native release
    mos_range: ClassVar[tuple[float, float] | None] = None   # rows outside are dropped

    def __init_subclass__(cls, **kwargs: object) -> None:
        """The folder is marked by a native release file or a DeQA test meta of any size
        suffix (`test_koniq_*.json`, in metas/ or beside it: find_meta's two places)."""
        super().__init_subclass__(**kwargs)
        if hasattr(cls, "native_files") and hasattr(cls, "deqa_key"):
            meta = f"test_{cls.deqa_key}_*.json"
            cls.markers = (*cls.native_files, f"metas/{meta}", meta)

    @abstractmethod
    def read_native(self, folder: Path) -> tuple[list[ScoreRow], Path]:
        """Every rated image of the release (all splits) and the file they came from."""

    def load(self, folder: Path, split: str) -> TaskData:
        self.lower_better = type(self).lower_better   # the declaration, until a file says otherwise
        meta = find_meta(folder, f"{split}_{self.deqa_key}_*.json") if split != "all" else None
        if meta is not None:
            return self.load_deqa(folder, meta, split)
        if not any((folder / f).exists() for f in self.native_files):
            wanted = " or ".join(self.native_files)   # `all` exists only in the native release
            if split != "all":
                wanted = f"metas/{split}_{self.deqa_key}_*.json or {wanted}"
            raise DataError(f"{self.name}: split {split!r} needs {wanted}; not found in {folder}")
        return self.load_native(folder, split)

    def load_native(self, folder: Path, split: str) -> TaskData:
        rows, source = self.read_native(folder)
        for row in rows:
            check_inside(folder, row.image, source)
        scores = [usable_score(r.mos, self.mos_range) for r in rows]
        valid = [replace(r, mos=score) for r, score in zip(rows, scores) if score is not None]
        if not valid:
            raise DataError(f"{source}: no row has a usable score")
        norms = rescale([r.mos for r in valid], self.lower_better)   # over the whole dataset
        if split != "all" and all(r.split is None for r in valid):
            raise DataError(f"{self.name}: {source.name} defines no {split!r} split; use "
                            f"--split all, or add the DeQA meta metas/{split}_{self.deqa_key}_*.json")
        chosen = [(r, n) for r, n in zip(valid, norms) if split == "all" or r.split == split]
        scale = f"outside {self.mos_range[0]}..{self.mos_range[1]}" if self.mos_range else "non-finite"
        notes = drop_note(len(rows) - len(valid), f"rows with a missing or {scale} score", source)
        return TaskData(self.to_samples(chosen, folder, split), notes,
                        source=f"native release {relative_id(source, folder)}, split {split}")

    def load_deqa(self, folder: Path, meta: Path, split: str) -> TaskData:
        deqa = read_deqa(folder, meta, self.lower_better)
        if not deqa.rows:
            raise DataError(f"{meta}: no record has a usable image and gt_score")
        # The direction actually found in the file is what the metrics must orient by.
        self.lower_better = deqa.lower_better
        notes = list(deqa.notes)
        norms = deqa.norms
        if any(n is None for n in norms):
            norms = rescale([r.mos for r in deqa.rows], deqa.lower_better)
            notes.append(f"{meta.name}: no gt_score_norm in some records; [1, 5] scores rescaled "
                         f"over this file's min/max, not the whole dataset's")
        return TaskData(self.to_samples(list(zip(deqa.rows, norms)), folder.parent, split), notes,
                        source=f"DeQA-Score meta {relative_id(meta, folder.parent)}")

    def to_samples(self, rows: list[tuple[ScoreRow, float]], root: Path, split: str) -> list[Sample]:
        return [Sample(id=relative_id(row.image, root), task=self.name, kind="score",
                       images=(str(row.image),), mos=row.mos, mos_norm=norm,
                       meta={"split": split, **row.meta})
                for row, norm in rows]
