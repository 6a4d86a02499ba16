"""KonIQ-10k: in-the-wild photographs, MOS 1-5 (REFERENCE §2). The official `set` column of
koniq10k_distributions_sets.csv gives train/validation/test; the DeQA test meta (2,010) wins
where it is present."""
from __future__ import annotations

from pathlib import Path

from qbench import register_task

from ._formats import ScoreRow, read_csv
from ._score import ScoreTask

SETS_CSV = "koniq10k_distributions_sets.csv"
SCORES_CSV = "koniq10k_scores_and_distributions.csv"
IMAGE_FOLDERS = ("1024x768", "512x384")
SET_WORDS = {"training": "train", "validation": "validation", "test": "test"}


@register_task
class KonIQ(ScoreTask):
    name = "koniq"
    description = "KonIQ-10k in-the-wild photographs (MOS 1-5)"
    splits = ("test", "train", "validation", "all")
    expected_count = {"test": 2010, "all": 10073}
    folders = ("koniq", "koniq10k", "KONIQ")
    native_files = (SETS_CSV, SCORES_CSV)
    deqa_key = "koniq"
    mos_range = (1.0, 5.0)

    def read_native(self, folder: Path) -> tuple[list[ScoreRow], Path]:
        has_sets = (folder / SETS_CSV).exists()
        path = folder / (SETS_CSV if has_sets else SCORES_CSV)
        frame = read_csv(path, ["image_name", "MOS"] + (["set"] if has_sets else []))
        images = next((folder / f for f in IMAGE_FOLDERS if (folder / f).is_dir()), folder / IMAGE_FOLDERS[0])
        sets = (frame["set"].astype(str).str.strip().str.lower().map(SET_WORDS) if has_sets
                else [None] * len(frame))
        return [ScoreRow(images / str(name).strip(), mos, None if split != split else split)
                for name, mos, split in zip(frame["image_name"], frame["MOS"], sets)], path
