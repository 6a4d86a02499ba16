"""SPAQ: smartphone photographs, MOS 0-100 (REFERENCE §2). The release has no test split: the
DeQA test meta (2,224) is the default; the native sheet serves `--split all`."""
from __future__ import annotations

from pathlib import Path

from qbench import register_task

from ._formats import ScoreRow, read_xlsx
from ._score import ScoreTask

SHEET_FILE = "Annotations/MOS and Image attribute scores.xlsx"


@register_task
class SPAQ(ScoreTask):
    name = "spaq"
    description = "SPAQ smartphone photographs (MOS 0-100)"
    splits = ("test", "train", "all")
    expected_count = {"test": 2224, "all": 11125}
    folders = ("spaq", "SPAQ")
    native_files = (SHEET_FILE,)
    deqa_key = "spaq"
    mos_range = (0.0, 100.0)

    def read_native(self, folder: Path) -> tuple[list[ScoreRow], Path]:
        path = folder / SHEET_FILE
        frame = read_xlsx(path, ["Image name", "MOS"])
        return [ScoreRow(folder / "TestImage" / str(name).strip(), mos)
                for name, mos in zip(frame["Image name"], frame["MOS"])], path
