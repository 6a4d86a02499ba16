"""PIPAL: restoration outputs rated by Elo (917-1836, higher is better; REFERENCE §2). Only the
training labels are public (`Train_Label/`, 23,200 images): the test split that DeQA-Score and
Q-Insight report exists only as the DeQA meta (`metas/test_pipal_*.json`, whose size is not
published: no count is checked); without it, `--split all` evaluates on the public labels, which
is not the published protocol."""
from __future__ import annotations

from pathlib import Path

from qbench import DataError, register_task
from qbench.tasks._formats import ScoreRow, index_images, read_name_scores
from qbench.tasks._score import NativeTable, ScoreTask, Split


@register_task
class PIPAL(ScoreTask):
    name = "pipal"
    label = "PIPAL"
    description = "PIPAL restoration outputs (Elo scores); test split from the DeQA meta only"
    split_specs = {
        "test": Split(deqa="test_pipal_*.json"),
        "train": Split(deqa="train_pipal_*.json"),
        "all": Split(native="*", expected={"native": 23200}),
    }
    folders = ("pipal", "PIPAL")
    native_files = ("Train_Label",)

    def read_native(self, folder: Path) -> NativeTable:
        labels = folder / "Train_Label"
        files = sorted(labels.glob("*.txt"))
        if not files:
            raise DataError(f"{labels}: no label files "
                            "(*.txt with lines 'A0001_00_00.bmp,1520.06')")
        found = index_images(sorted(folder.glob("Distortion*")))
        rows = [ScoreRow(found.get(name.lower(), folder / "Distortion_1" / name),
                         float("nan") if score is None else score, meta={"ref": name.split("_")[0]})
                for file in files for name, score in read_name_scores(file)]
        return NativeTable(rows, labels, None)
