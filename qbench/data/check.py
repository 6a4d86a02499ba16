"""`qbench data check`: what each task finds under the data root before a model is run: the
files read, the sample count against the expected one, missing or unreadable images, duplicate
images (same content) and train/test overlap where a train split exists (Q-Align's KADID files
overlap by 1,844 images)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from qbench.core.task import DataError, Task
from qbench.data.images import ImageError, load_image

SHOWN = 5  # ids listed per problem; the rest are counted


@dataclass(frozen=True)
class FileCheck:
    path: str
    exists: bool
    digest: str | None      # sha256 of the bytes, when they could be read
    error: str | None       # why it cannot be read or decoded (decoding checked only when asked)


@dataclass
class TaskCheck:
    task: str
    split: str
    folder: Path | None = None
    error: str | None = None            # the task could not be located or its files read
    source: str = ""
    split_source: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # differences from the published split
    samples: int = 0
    expected: int | None = None
    images: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)   # the reasons, each naming its file
    duplicates: list[list[str]] = field(default_factory=list)
    overlap: list[str] | None = None    # None: no train split to compare with

    @property
    def ok(self) -> bool:
        return (self.error is None and not self.missing and not self.unreadable
                and not self.problems)


def inspect_file(path: str, decode: bool) -> FileCheck:
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return FileCheck(path, False, None, "missing")
    except OSError as exc:
        return FileCheck(path, True, None, f"cannot read {path}: {exc.strerror or exc}")
    if decode:
        try:
            load_image(path)
        except ImageError as exc:
            return FileCheck(path, True, digest, str(exc))
    return FileCheck(path, True, digest, None)


def inspect_files(paths: Iterable[str], decode: bool, workers: int) -> list[FileCheck]:
    paths = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        return list(pool.map(lambda p: inspect_file(p, decode), paths))


def _shown(root: Path, path: str) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def check_task(task: Task, data_root: Path | None, override: Path | None = None,
               split: str | None = None, decode: bool = True, workers: int = 4) -> TaskCheck:
    split = split or task.default_split
    check = TaskCheck(task.name, split)
    try:
        check.folder = task.locate(data_root, override)
        data = task.load_split(check.folder, split)
    except DataError as exc:
        check.error = str(exc)
        return check
    check.source, check.split_source, check.notes = data.source, data.split_source, data.notes
    check.problems, check.samples = data.problems(), len(data.samples)
    check.expected = data.expected_count
    files = inspect_files((p for s in data.samples for p in s.images), decode, workers)
    check.images = len(files)
    check.missing = [_shown(check.folder, f.path) for f in files if not f.exists]
    check.unreadable = [f.error for f in files if f.exists and f.error]   # each names its file
    by_digest: dict[str, list[str]] = {}
    for f in files:
        if f.digest:
            by_digest.setdefault(f.digest, []).append(_shown(check.folder, f.path))
    check.duplicates = [paths for paths in by_digest.values() if len(paths) > 1]
    if "train" in task.splits and split != "train":
        check.overlap = train_overlap(task, check.folder, files, workers)
    return check


def train_overlap(task: Task, folder: Path, files: list[FileCheck], workers: int
                  ) -> list[str] | None:
    """Images of the checked split that the train split also holds, by path or by content;
    None when the train split cannot be read."""
    try:
        train = task.load(folder, "train")
    except (DataError, KeyError):
        return None
    train_files = inspect_files((p for s in train.samples for p in s.images), False, workers)
    paths = {str(Path(f.path).resolve()) for f in train_files}
    digests = {f.digest for f in train_files if f.digest}
    return [_shown(folder, f.path) for f in files
            if str(Path(f.path).resolve()) in paths or (f.digest and f.digest in digests)]


def _listing(items: list[str]) -> str:
    more = f", … (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def format_check(check: TaskCheck) -> list[str]:
    """The report of one task, a line per finding."""
    if check.error:
        return [f"{check.task}: NOT READY: {check.error}"]
    expected = (f" (expected {check.expected})" if check.expected is not None
                else " (no published count to check)")
    lines = [f"{check.task}: {'ok' if check.ok else 'PROBLEMS'}: {check.folder}",
             f"  read: {check.source}"]
    if check.split_source and check.split_source != check.source:
        lines.append(f"  split defined by: {check.split_source}")
    lines.append(f"  split {check.split}: {check.samples} samples{expected}, "
                 f"{check.images} image files")
    lines += [f"  PROBLEM: {problem}" for problem in check.problems]
    lines += [f"  note: {note}" for note in check.notes]
    if check.missing:
        lines.append(f"  missing images: {len(check.missing)}: {_listing(check.missing)}")
    if check.unreadable:
        lines.append(f"  unreadable images: {len(check.unreadable)}: {_listing(check.unreadable)}")
    if check.duplicates:
        groups = [" = ".join(g) for g in check.duplicates]
        lines.append(f"  duplicate images (same content): {len(groups)} groups: {_listing(groups)}")
    if check.overlap is not None:
        lines.append(f"  train/{check.split} overlap: {len(check.overlap)} images"
                     + (f": {_listing(check.overlap)}" if check.overlap else ""))
    return lines




