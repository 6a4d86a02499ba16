"""PIPAL: restoration outputs rated by Elo (917-1836, higher is better; REFERENCE §2). Only
the training labels are public: the DeQA test meta (5k) is the default split."""
from __future__ import annotations

from pathlib import Path

from qbench import DataError, register_task

from ._formats import ScoreRow, index_images, read_name_scores
from ._score import ScoreTask


@register_task
class PIPAL(ScoreTask):
    name = "pipal"
    description = "PIPAL restoration outputs (Elo scores)"
    splits = ("test", "train", "all")
    expected_count = {"test": 5000, "all": 23200}
    folders = ("pipal", "PIPAL")
    native_files = ("Train_Label",)
    deqa_key = "pipal"

    def read_native(self, folder: Path) -> tuple[list[ScoreRow], Path]:
        labels = folder / "Train_Label"
        files = sorted(labels.glob("*.txt"))
        if not files:
            raise DataError(f"{labels}: no label files (*.txt with lines 'A0001_00_00.bmp,1520.06')")
        found = index_images(sorted(folder.glob("Distortion*")))
        rows = [ScoreRow(found.get(name.lower(), folder / "Distortion_1" / name),
                         float("nan") if score is None else score, meta={"ref": name.split("_")[0]})
                for file in files for name, score in read_name_scores(file)]
        return rows, labels
