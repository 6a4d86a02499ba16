"""SPAQ: 11,125 smartphone photographs, MOS 0-100 (REFERENCE §2). The release has no test split:
the default `test` is the 2,224 images of Q-Align's test_spaq.json (DeQA-Score tests on a set of
the same size): the DeQA meta, else Q-Align's JSON, else the packaged list applied to the native
sheet; `--split all` is the whole set.

SPAQ's photographs are up to 4000x3000. Its authors' protocol (Fang et al., CVPR 2020) scores
them downscaled so that the shorter side is 512 px; qbench does the same by default
(`--task-arg spaq.resize_short_side=512`, bicubic, recorded in the run) and
`resize_short_side=none` keeps the full size. The Q-Align, DeQA-Score and Q-Insight code reads
whatever image files it is given and does not say which size their published SPAQ figures saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qbench import DataError, register_task
from qbench.tasks._formats import ScoreRow, read_xlsx
from qbench.tasks._score import NativeTable, ScoreTask, Split

SHEET_FILE = "Annotations/MOS and Image attribute scores.xlsx"
PUBLISHED_SHORT_SIDE = 512


@dataclass(frozen=True)
class SPAQOptions:
    resize_short_side: int | None = PUBLISHED_SHORT_SIDE


@register_task
class SPAQ(ScoreTask):
    name = "spaq"
    label = "SPAQ"
    description = "SPAQ smartphone photographs (MOS 0-100), shorter side 512 px by default"
    split_specs = {
        "test": Split(deqa="test_spaq_*.json", qalign="test_spaq.json",
                      names="qalign_spaq_test.txt", native="*",
                      expected={"deqa": 2224, "qalign": 2224, "native": 2224}),
        "train": Split(deqa="train_spaq_*.json"),
        "all": Split(native="*", expected={"native": 11125}),
    }
    folders = ("spaq", "SPAQ")
    native_files = (SHEET_FILE,)
    image_folders = ("TestImage", "images")
    qalign_range = (0.0, 100.0)
    Options = SPAQOptions

    def __init__(self, options=None):
        super().__init__(options)
        side = self.options.resize_short_side
        if side is not None and side < 1:
            raise DataError(f"spaq: --task-arg resize_short_side must be a positive number of "
                            f"pixels or none, got {side}")

    def resize_short_side(self) -> int | None:
        return self.options.resize_short_side

    def read_native(self, folder: Path) -> NativeTable:
        path = folder / SHEET_FILE
        frame = read_xlsx(path, ["Image name", "MOS"])
        return NativeTable([ScoreRow(folder / "TestImage" / str(name).strip(), mos)
                            for name, mos in zip(frame["Image name"], frame["MOS"], strict=True)],
                           path, (0.0, 100.0))
