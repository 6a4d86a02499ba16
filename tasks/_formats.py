"""Readers shared by the benchmark tasks: release tables (CSV, XLSX, `name,score` text files),
DeQA-Score meta JSON, path safety and the [1, 5] rescaling of REFERENCE §2.

Every problem with a file is a DataError whose message is one line naming the file and what was
found there; problems with single rows are counted and reported in notes, never fatal.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from qbench import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class ScoreRow:
    """One rated image as a release file lists it: `image` is an absolute path, `split` the
    release's own split word (None where the release has none)."""

    image: Path
    mos: float
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


# ------------------------------------------------------------------------------ paths

def check_inside(root: Path, path: Path, source: Path, given: str | None = None) -> Path:
    """`path`, refused (DataError) when it leads outside `root`: a meta file must not make
    qbench read files elsewhere on the machine. Lexical, so that symlinked image folders stay
    usable."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise DataError(f"{source}: image path {given or str(path)!r} leads outside the data root "
                        f"{root}; refused")
    return path


def safe_path(root: Path, relative: str, source: Path) -> Path:
    """`root / relative` for a path read from a meta file, refused when absolute or escaping."""
    text = str(relative).replace("\\", "/")
    if PurePosixPath(text).is_absolute():
        raise DataError(f"{source}: image path {relative!r} leads outside the data root {root}; "
                        "refused")
    return check_inside(root, root / PurePosixPath(text), source, relative)


def relative_id(path: Path, root: Path) -> str:
    """A sample id: the image path relative to the folder it was found in, '/'-separated."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def index_images(folders: Iterable[Path]) -> dict[str, Path]:
    """Image files under `folders` (recursively) by lower-case file name; the first folder
    listed wins a name clash. Releases scatter images over sub-folders (PIPAL's Distortion_*,
    CSIQ's dst_imgs/<type>/, CLIVE's trainingImages/)."""
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(path.name.lower(), path)
    return index


# ------------------------------------------------------------------------------ scales

def rescale(values: Sequence[float], lower_better: bool) -> list[float]:
    """REFERENCE §2: norm = 4·(v − min)/(max − min) + 1 over the whole dataset, flipped for
    lower-is-better scales so that 5 is always the best."""
    array = np.asarray(values, dtype=float)
    low, high = float(array.min()), float(array.max())
    if high == low:
        raise DataError(f"cannot rescale to [1, 5]: every score equals {low}")
    norm = 4.0 * (array - low) / (high - low) + 1.0
    return (6.0 - norm if lower_better else norm).tolist()


def usable_score(value: Any, valid: tuple[float, float] | None) -> float | None:
    """The score as a float, or None when it is missing, not a number or outside `valid`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or (valid and not valid[0] <= number <= valid[1]):
        return None
    return number


def drop_note(count: int, what: str, source: Path | str) -> list[str]:
    return [f"dropped {count} {what} in {source}"] if count else []


# ------------------------------------------------------------------------------ tables

def _require(frame: pd.DataFrame, columns: Sequence[str], path: Path, where: str = "") -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(f"{path}{where}: missing column(s) {', '.join(missing)}; "
                        f"columns found: {found}")


def read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A release CSV with at least `columns` (header on the first line)."""
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV: {str(exc).splitlines()[0]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _require(frame, columns, path)
    return frame


def read_xlsx(path: Path, columns: Sequence[str], sheet: str | int = 0, header_row: int = 1
              ) -> pd.DataFrame:
    """One sheet of a release XLSX whose header sits on `header_row` (1-based, as Excel counts)."""
    try:
        sheets = pd.ExcelFile(path, engine="openpyxl")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    # what openpyxl raises on a file that is not an XLSX workbook
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable XLSX workbook: "
                        f"{str(exc).splitlines()[0]}") from None
    with sheets:
        if isinstance(sheet, str) and sheet not in sheets.sheet_names:
            raise DataError(f"{path}: no sheet {sheet!r}; "
                            f"sheets found: {', '.join(map(str, sheets.sheet_names))}")
        frame = pd.read_excel(sheets, sheet_name=sheet, header=header_row - 1)
    frame = frame.dropna(how="all")
    frame.columns = [str(c).strip() for c in frame.columns]
    _require(frame, columns, path, f" (sheet {sheet!r}, header row {header_row})")
    return frame


def read_name_scores(path: Path) -> list[tuple[str, float | None]]:
    """Lines `name,score` (PIPAL labels, SRIQA-Bench MOS files; A-FINE's own reader also takes
    `name score`). A score that is not a number becomes None (the caller counts it); a line
    with no separator is a format error."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(",") if "," in line else line.split()
        if len(parts) < 2 or not parts[0].strip():
            raise DataError(f"{path}:{number}: expected 'name,score', got {line.strip()[:60]!r}")
        out.append((parts[0].strip(), usable_score(parts[1].strip(), None)))
    return out


# ------------------------------------------------------------------------------ published lists

def read_name_list(name: str) -> list[str]:
    """A packaged list of image names (`qbench/tasks/splits/<name>`): one name or relative path
    per line, `#` lines are provenance comments."""
    text = (resources.files("qbench.tasks") / "splits" / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def name_key(path: str | Path) -> str:
    """How a listed image is matched to a release row: its file name, case-folded (lists and
    releases disagree on folders and on the case of type words: `1600.AWGN.1.png`)."""
    return PurePosixPath(str(path).replace("\\", "/")).name.lower()


def select_listed(rows: list[ScoreRow], names: Sequence[str], label: str
                  ) -> tuple[list[ScoreRow], list[str]]:
    """The rows a published list names, in the list's order, and a note for each listed name
    the release does not have."""
    by_name = {name_key(r.image): r for r in rows}
    chosen = [by_name[name_key(n)] for n in names if name_key(n) in by_name]
    absent = [n for n in names if name_key(n) not in by_name]
    notes = ([f"{len(absent)} of the {len(names)} images of {label} are not rows of the release "
              f"file (e.g. {', '.join(absent[:3])})"] if absent else [])
    return chosen, notes


# ------------------------------------------------------------------------------ repeated images

def keep_first(rows: list[ScoreRow], source: Path | str) -> tuple[list[ScoreRow], int, list[str]]:
    """One row per image: the first listed is kept (the documented rule). Returns the rows, the
    number of images listed more than once, and a note naming them with their scores."""
    first: dict[Path, ScoreRow] = {}
    extra: dict[Path, list[float]] = {}
    for row in rows:
        if row.image in first:
            extra.setdefault(row.image, []).append(row.mos)
        else:
            first[row.image] = row
    if not extra:
        return rows, 0, []
    differ = [image for image, scores in extra.items()
              if any(s != first[image].mos for s in scores)]
    shown = "; ".join(
        f"{image.name} ({', '.join(f'{v:g}' for v in [first[image].mos, *extra[image]])})"
        for image in list(extra)[:3])
    note = (f"{len(extra)} images listed more than once in {source} ({len(differ)} with different "
            f"scores); kept the first row of each: {shown}")
    return list(first.values()), len(extra), [note]


# ------------------------------------------------------------------------------ meta files

def find_meta(folder: Path, pattern: str) -> Path | None:
    """A meta file (a DeQA `test_koniq_*.json`, a Q-Align `test_koniq.json`) in
    `<folder>/metas/` or `<folder>/`."""
    for place in (folder / "metas", folder):
        found = sorted(place.glob(pattern)) if place.is_dir() else []
        if found:
            return found[0]
    return None


def read_json_records(path: Path) -> list[Any]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def deqa_base(folder: Path, image: str) -> Path:
    """Meta image paths are relative to the data root (`KONIQ/images/x.jpg`, Q-Align's
    `koniq/x.jpg`): resolve against the dataset folder's parent when the path starts with the
    folder's own name."""
    first = PurePosixPath(str(image).replace("\\", "/")).parts[:1]
    return folder.parent if first and first[0].lower() == folder.name.lower() else folder


@dataclass
class MetaRows:
    """The usable records of a meta file, and what was dropped and why."""

    rows: list[ScoreRow]
    norms: list[float | None]       # gt_score_norm per row, where the record has one
    read: int                       # records in the file
    dropped: int
    notes: list[str]


def _dropped_note(meta: Path, read: int, reasons: dict[str, int]) -> list[str]:
    if not reasons:
        return []
    why = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
    return [f"dropped {sum(reasons.values())} of {read} records of {meta.name}: {why}"]


def read_deqa(folder: Path, meta: Path,
              images: Callable[[], dict[str, Path]] | None = None) -> MetaRows:
    """Rows of a DeQA-Score meta file (`{image, gt_score, gt_score_norm, ...}`); gt_score is
    kept raw. The caller reads its direction off gt_score_norm (see `direction_of`). An image
    not at its listed path is looked up by file name in `images()` (built only then): archives
    of the same images lay them out otherwise (pyiqa's PIPAL: Dist_Imgs/ for images/)."""
    rows: list[ScoreRow] = []
    norms: list[float | None] = []
    reasons: Counter[str] = Counter()
    index: dict[str, Path] | None = None
    moved = 0
    records = read_json_records(meta)
    for record in records:
        if not isinstance(record, dict) or "image" not in record:
            reasons["without 'image'"] += 1
            continue
        score = usable_score(record.get("gt_score"), None)
        norm = usable_score(record.get("gt_score_norm"), (1.0 - 1e-6, 5.0 + 1e-6))
        if score is None:
            reasons["without a numeric 'gt_score'"] += 1
            continue
        if record.get("gt_score_norm") is not None and norm is None:
            reasons["with a 'gt_score_norm' outside [1, 5]"] += 1
            continue
        image = str(record["image"])
        path = safe_path(deqa_base(folder, image), image, meta)
        if images is not None and not path.exists():
            index = images() if index is None else index
            if (found := index.get(name_key(image))) is not None:
                path, moved = found, moved + 1
        rows.append(ScoreRow(path, score, meta={"deqa_id": record.get("id")}))
        norms.append(norm)
    notes = _dropped_note(meta, len(records), dict(reasons))
    if moved:
        notes.append(f"{moved} images of {meta.name} found by file name in {folder}, not at the "
                     "path the meta lists")
    return MetaRows(rows, norms, len(records), sum(reasons.values()), notes)


def direction_of(rows: MetaRows, declared_lower_better: bool, meta: Path) -> tuple[bool, list[str]]:
    """Whether gt_score is lower-is-better in this file, read off gt_score_norm (which REFERENCE
    §2 says is always higher-is-better): re-packagings of DMOS sets differ in whether they
    flipped the raw score. The declaration stands where the file cannot tell."""
    paired = [(r.mos, n) for r, n in zip(rows.rows, rows.norms, strict=True) if n is not None]
    if len(paired) < 3 or np.ptp([p[0] for p in paired]) == 0:
        return declared_lower_better, []
    rho = float(stats.spearmanr(*zip(*paired, strict=True))[0])
    found = bool(rho < 0) if math.isfinite(rho) else declared_lower_better
    if found == declared_lower_better:
        return found, []
    return found, [f"{meta.name}: gt_score is {'lower' if found else 'higher'}-is-better in this "
                   f"file (read off gt_score_norm); metrics use that direction"]


QALIGN_IMAGE_KEYS = ("image", "img_path")


def qalign_score(record: dict[str, Any]) -> float | None:
    """A Q-Align test record's score: `gt_score` (a number or a numeric string), else the number
    after '->' in `id` (its test_kadid.json keeps the score only there)."""
    if "gt_score" in record:
        return usable_score(record["gt_score"], None)
    _, arrow, tail = str(record.get("id", "")).rpartition("->")
    return usable_score(tail, None) if arrow else None


def read_qalign(folder: Path, meta: Path, images: dict[str, Path]) -> MetaRows:
    """Rows of one of Q-Align's own test JSON files (`test_koniq.json`, `livec.json`, ...).
    Their image paths are relative to Q-Align's data folder (`koniq/x.jpg`); an image is looked
    for there relative to this folder's parent, then to this folder, then by file name among
    `images` (the release's own image folders)."""
    rows: list[ScoreRow] = []
    reasons: Counter[str] = Counter()
    records = read_json_records(meta)
    for record in records:
        key = next((k for k in QALIGN_IMAGE_KEYS if isinstance(record, dict) and k in record), None)
        if key is None:
            reasons["without 'image' or 'img_path'"] += 1
            continue
        score = qalign_score(record)
        if score is None:
            reasons["without a numeric 'gt_score' (or a score after '->' in 'id')"] += 1
            continue
        listed = str(record[key])
        path = safe_path(deqa_base(folder, listed), listed, meta)
        if not path.exists():
            path = images.get(name_key(listed), path)
        rows.append(ScoreRow(path, score, meta={"listed_as": listed}))
    return MetaRows(rows, [None] * len(rows), len(records), sum(reasons.values()),
                    _dropped_note(meta, len(records), dict(reasons)))
