"""KonIQ-10k: 10,073 in-the-wild photographs (REFERENCE §2).

The authors release two tables, told apart here by their content, not by their file names:
`koniq10k_distributions_sets.csv` (`MOS` on 0-100, `SD` on the 1-5 vote scale, and the official
`set` column) and `koniq10k_scores_and_distributions.csv` (`MOS` on 1-5, `MOS_zscore` on 0-100,
no split). Splits: `qalign-test` (the default) is the 2,010 images Q-Align and DeQA-Score test
on: the official test set less five images (Q-Align's test_koniq.json); `test` is the official
2,015; `train` 7,058, `validation` 1,000, `all` 10,073.
"""
from __future__ import annotations

import math
from pathlib import Path

from qbench import DataError, register_task
from qbench.tasks._formats import ScoreRow, read_csv
from qbench.tasks._score import NativeTable, ScoreTask, Split

SETS_CSV = "koniq10k_distributions_sets.csv"
SCORES_CSV = "koniq10k_scores_and_distributions.csv"
IMAGE_FOLDERS = ("1024x768", "512x384")
SET_WORDS = {"training": "train", "validation": "validation", "test": "test"}
VOTE_SCALE, HUNDRED_SCALE = (1.0, 5.0), (0.0, 100.0)


def mos_scale(values: list[object]) -> tuple[float, float]:
    """The scale of a KonIQ `MOS` column as its values show it: 1-5 votes or 0-100."""
    finite = [v for v in (_number(x) for x in values) if v is not None]
    return HUNDRED_SCALE if finite and max(finite) > VOTE_SCALE[1] else VOTE_SCALE


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@register_task
class KonIQ(ScoreTask):
    name = "koniq"
    label = "KonIQ"
    description = "KonIQ-10k in-the-wild photographs (MOS)"
    split_specs = {
        "qalign-test": Split(deqa="test_koniq_*.json", qalign="test_koniq.json",
                             names="qalign_koniq_test.txt", native="test",
                             expected={"deqa": 2010, "qalign": 2010, "native": 2010}),
        "test": Split(native="test", expected={"native": 2015}),
        "train": Split(deqa="train_koniq_*.json", native="train", expected={"native": 7058}),
        "validation": Split(native="validation", expected={"native": 1000}),
        "all": Split(native="*", expected={"native": 10073}),
    }
    default_split = "qalign-test"
    folders = ("koniq", "koniq10k", "KONIQ")
    native_files = (SETS_CSV, SCORES_CSV)
    image_folders = IMAGE_FOLDERS
    qalign_range = HUNDRED_SCALE

    def read_native(self, folder: Path) -> NativeTable:
        tables = [folder / f for f in self.native_files if (folder / f).exists()]
        frames = {path: read_csv(path, ["image_name", "MOS"]) for path in tables}
        # the table with the official split column serves every split; the other only `all`
        # and the packaged list
        path = next((p for p, f in frames.items() if "set" in f.columns), tables[0])
        frame = frames[path]
        scale = mos_scale(list(frame["MOS"]))
        images = next((folder / f for f in IMAGE_FOLDERS if (folder / f).is_dir()),
                      folder / IMAGE_FOLDERS[0])
        if "set" in frame.columns:
            words = frame["set"].astype(str).str.strip().str.lower()
            unknown = sorted(set(words) - set(SET_WORDS) - {"nan"})
            if unknown:
                raise DataError(f"{path}: unknown words in its set column: {', '.join(unknown)} "
                                f"(expected {', '.join(SET_WORDS)})")
            splits = [SET_WORDS.get(w) for w in words]
        else:
            splits = [None] * len(frame)
        rows = [ScoreRow(images / str(name).strip(), mos, split)
                for name, mos, split in zip(frame["image_name"], frame["MOS"], splits, strict=True)]
        note = (f"{path.name}: MOS read on the {scale[0]:g}-{scale[1]:g} scale its values show")
        return NativeTable(rows, path, scale, [note])
