"""KADID-10k: 81 references × 25 distortions × 5 levels. The `dmos` column is MOS-like
(1-4.93, higher is better; REFERENCE §2). The DeQA test meta (2,000) is the default split."""
from __future__ import annotations

from pathlib import Path

from qbench import register_task

from ._formats import ScoreRow, read_csv
from ._score import ScoreTask


@register_task
class KADID(ScoreTask):
    name = "kadid"
    description = "KADID-10k synthetic distortions (dmos column, higher is better)"
    splits = ("test", "train", "all")
    expected_count = {"test": 2000, "all": 10125}
    folders = ("kadid", "kadid10k", "KADID10K")
    native_files = ("dmos.csv",)
    deqa_key = "kadid"
    mos_range = (1.0, 5.0)

    def read_native(self, folder: Path) -> tuple[list[ScoreRow], Path]:
        path = folder / "dmos.csv"
        frame = read_csv(path, ["dist_img", "dmos"])
        refs = frame["ref_img"] if "ref_img" in frame.columns else [None] * len(frame)
        return [ScoreRow(folder / "images" / str(name).strip(), mos, meta={"ref_img": ref})
                for name, mos, ref in zip(frame["dist_img"], frame["dmos"], refs)], path
