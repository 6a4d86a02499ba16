"""The common shape of the score benchmarks. Each declares its published splits and, for each,
the ways to build it, tried in this order:

1. a DeQA-Score meta file (`metas/test_koniq_*.json`: what Q-Insight tested on);
2. Q-Align's own test JSON under its published name (`test_koniq.json`, `livec.json`, ...);
3. the dataset's native release files, narrowed by a packaged list of the published test
   images (names only, no scores), by the release's own split column, or not at all.

What defined the split, its expected size from that source, the ground-truth direction and
scale, and every dropped or repeated row come back in the TaskData: the task keeps no state.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from qbench import DataError, Sample, Task, TaskData
from qbench.tasks._formats import (
    MetaRows,
    ScoreRow,
    check_inside,
    direction_of,
    drop_note,
    find_meta,
    index_images,
    keep_first,
    read_deqa,
    read_name_list,
    read_qalign,
    relative_id,
    rescale,
    select_listed,
    usable_score,
)


@dataclass(frozen=True)
class Split:
    """One split of a score task and the ways to build it (see the module docstring).

    deqa      glob of the DeQA-Score meta file, e.g. "test_koniq_*.json"
    qalign    file name of Q-Align's JSON, e.g. "test_koniq.json"
    names     packaged list of the published images (qbench/tasks/splits/), applied to the
              native rows
    native    the release's own split word, "*" for every row, None: not from the native files
    expected  published size by source: "deqa", "qalign", "native" (absent: not known)
    """

    deqa: str | None = None
    qalign: str | None = None
    names: str | None = None
    native: str | None = None
    expected: dict[str, int] = field(default_factory=dict)


@dataclass
class NativeTable:
    """Every rated image of a native release file (all splits) and the scale found in it."""

    rows: list[ScoreRow]
    path: Path
    mos_range: tuple[float, float] | None   # rows outside are dropped; None: finite is enough
    notes: list[str] = field(default_factory=list)


class ScoreTask(Task):
    """Subclasses declare `split_specs`, `native_files`, the scales, and `read_native`."""

    kind = "score"
    split_specs: ClassVar[dict[str, Split]]
    native_files: ClassVar[tuple[str, ...]]              # any one marks the native release
    image_folders: ClassVar[tuple[str, ...]] = ()        # where Q-Align's listed images lie
    qalign_range: ClassVar[tuple[float, float] | None] = None   # Q-Align JSON score scale

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Splits, default split and the files that mark the folder, from `split_specs`."""
        super().__init_subclass__(**kwargs)
        if hasattr(cls, "split_specs") and hasattr(cls, "native_files"):
            cls.splits = tuple(cls.split_specs)
            metas = [p for s in cls.split_specs.values() for p in (s.deqa, s.qalign) if p]
            cls.markers = (*cls.native_files, *dict.fromkeys(m for p in metas
                                                              for m in (f"metas/{p}", p)))

    @abstractmethod
    def read_native(self, folder: Path) -> NativeTable:
        """Every rated image of the release (all splits)."""

    def split_help(self, split: str) -> str:
        """Where `split` comes from, in the order tried (for `qbench list` and the README)."""
        spec = self.split_specs[split]
        ways = []
        if spec.deqa:
            ways.append(f"DeQA meta {spec.deqa}")
        if spec.qalign:
            ways.append(f"Q-Align {spec.qalign}")
        if spec.native is not None:
            files = "/".join(self.native_files)
            ways.append(f"{files} + packaged list {spec.names}" if spec.names else
                        f"{files} (every row)" if spec.native == "*" else
                        f"{files}, rows of its split {spec.native!r}")
        counts = ", ".join(f"{k} {v:,}" for k, v in spec.expected.items()) or "no published count"
        return f"{' > '.join(ways)} ({counts})"

    def resize_short_side(self) -> int | None:
        """The protocol's downscaling of this task's images (SPAQ), None for none."""
        return None

    # ------------------------------------------------------------------------ loading
    def load(self, folder: Path, split: str) -> TaskData:
        spec = self.split_specs[split]
        meta = find_meta(folder, spec.deqa) if spec.deqa else None
        if meta is not None:
            return self.load_deqa(folder, meta, split, spec)
        qalign = find_meta(folder, spec.qalign) if spec.qalign else None
        if qalign is not None:
            return self.load_qalign(folder, qalign, split, spec)
        if spec.native is not None and any((folder / f).exists() for f in self.native_files):
            return self.load_native(folder, split, spec)
        wanted = [w for w in (f"metas/{spec.deqa}" if spec.deqa else None, spec.qalign,
                              " or ".join(self.native_files) if spec.native is not None else None)
                  if w]
        raise DataError(f"{self.name}: split {split!r} needs {' or '.join(wanted)}; "
                        f"not found in {folder}")

    def load_native(self, folder: Path, split: str, spec: Split) -> TaskData:
        table = self.read_native(folder)
        for row in table.rows:
            check_inside(folder, row.image, table.path)
        valid = [replace(r, mos=score) for r in table.rows
                 if (score := usable_score(r.mos, table.mos_range)) is not None]
        if not valid:
            raise DataError(f"{table.path}: no row has a usable score"
                            + (f" (expected {table.mos_range[0]:g}..{table.mos_range[1]:g})"
                               if table.mos_range else ""))
        scale = (f"outside {table.mos_range[0]:g}..{table.mos_range[1]:g}" if table.mos_range
                 else "non-finite")
        notes = table.notes + drop_note(len(table.rows) - len(valid),
                                        f"rows with a missing or {scale} score", table.path)
        if spec.native not in ("*", None) and not spec.names \
                and all(r.split is None for r in valid):
            raise DataError(f"{self.name}: {table.path.name} has no split column to define "
                            f"split {split!r}; the splits that work with it: "
                            f"{', '.join(self.native_splits_without_column())}")
        rows, repeated, repeat_notes = keep_first(valid, table.path)
        norms = dict(zip((r.image for r in rows),
                         rescale([r.mos for r in rows], self.lower_better), strict=True))
        file = relative_id(table.path, folder)
        if spec.names:
            label = f"the packaged list {spec.names}"
            chosen, absent = select_listed(rows, read_name_list(spec.names), label)
            notes += absent
            split_source = f"{label} (published test images) applied to {file}"
        elif spec.native == "*":
            chosen, split_source = rows, f"every row of {file}"
        else:
            chosen = [r for r in rows if r.split == spec.native]
            split_source = f"rows of {file} whose split is {spec.native!r}"
        return self.data(
            [(r, norms[r.image]) for r in chosen], folder, split, spec, "native",
            source=f"native release {file}", split_source=split_source, notes=notes + repeat_notes,
            mos_range=table.mos_range, read=len(table.rows),
            dropped=len(table.rows) - len(valid) + repeated, repeated=repeated)

    def native_splits_without_column(self) -> list[str]:
        return [name for name, s in self.split_specs.items()
                if s.native == "*" or (s.native is not None and s.names)]

    def load_deqa(self, folder: Path, meta: Path, split: str, spec: Split) -> TaskData:
        found = read_deqa(folder, meta, lambda: index_images(
            [folder / f for f in self.image_folders] + [folder]))
        return self.from_meta(found, folder, meta, split, spec, "deqa", "DeQA-Score meta",
                              *direction_of(found, self.lower_better, meta))

    def load_qalign(self, folder: Path, meta: Path, split: str, spec: Split) -> TaskData:
        images = index_images([folder / f for f in self.image_folders] or [folder])
        found = read_qalign(folder, meta, images)
        scale_range = self.qalign_range   # without one, read_qalign's finite scores all stand
        valid = [r for r in found.rows if usable_score(r.mos, scale_range) is not None]
        if scale_range is not None and len(valid) < len(found.rows):
            scale = f"{scale_range[0]:g}..{scale_range[1]:g}"
            found.notes.append(f"dropped {len(found.rows) - len(valid)} records of {meta.name} "
                               f"with a gt_score outside {scale}")
            found = MetaRows(valid, [None] * len(valid), found.read,
                             found.dropped + len(found.rows) - len(valid), found.notes)
        return self.from_meta(found, folder, meta, split, spec, "qalign", "Q-Align test JSON",
                              self.lower_better, [])

    def from_meta(self, found: MetaRows, folder: Path, meta: Path, split: str, spec: Split,
                  kind: str, label: str, lower_better: bool, direction_notes: list[str]
                  ) -> TaskData:
        if not found.rows:
            raise DataError(f"{meta}: no record has a usable image and score"
                            + (f" ({found.notes[0]})" if found.notes else ""))
        rows, repeated, repeat_notes = keep_first(found.rows, meta.name)
        norm_of: dict[Path, float | None] = {}
        for row, norm in zip(found.rows, found.norms, strict=True):
            norm_of.setdefault(row.image, norm)
        notes = found.notes + direction_notes + repeat_notes
        given = [norm_of[r.image] for r in rows]
        norms = [n for n in given if n is not None]
        if len(norms) < len(given):
            norms = rescale([r.mos for r in rows], lower_better)
            notes.append(f"{meta.name}: no gt_score_norm; [1, 5] scores rescaled over this "
                         f"file's min/max, not the whole dataset's")
        root = folder.parent
        where = relative_id(meta, root)
        return self.data(list(zip(rows, norms, strict=True)), root, split, spec, kind,
                         source=f"{label} {where}", split_source=f"{label} {where}", notes=notes,
                         mos_range=self.qalign_range if kind == "qalign" else None,
                         read=found.read, dropped=found.dropped + repeated, repeated=repeated,
                         lower_better=lower_better)

    def data(self, rows: list[tuple[ScoreRow, float]], root: Path, split: str, spec: Split,
             kind: str, *, source: str, split_source: str, notes: list[str],
             mos_range: tuple[float, float] | None, read: int, dropped: int, repeated: int,
             lower_better: bool | None = None) -> TaskData:
        resize = self.resize_short_side()
        samples = [Sample(id=relative_id(row.image, root), task=self.name, kind="score",
                          images=(str(row.image),), mos=row.mos, mos_norm=norm,
                          resize_short_side=resize, meta={"split": split, **row.meta})
                   for row, norm in rows]
        return TaskData(samples, notes, source=source, split=split, split_source=split_source,
                        lower_better=self.lower_better if lower_better is None else lower_better,
                        mos_range=mos_range, expected_count=spec.expected.get(kind),
                        rows_read=read, rows_dropped=dropped, repeated=repeated,
                        options=self.option_values())
