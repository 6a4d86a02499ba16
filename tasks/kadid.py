"""KADID-10k: 81 references x 25 distortions x 5 levels. The `dmos` column is MOS-like (1-4.93,
higher is better; REFERENCE §2). The default `test` is the 2,000 images of Q-Align's
test_kadid.json (DeQA-Score tests on a set of the same size); `--split all` is the whole set.
Q-Align's own test_kadid.json keeps each score only in its `id` ("I66_01_01.png->4.63")."""
from __future__ import annotations

from pathlib import Path

from qbench import register_task
from qbench.tasks._formats import ScoreRow, read_csv
from qbench.tasks._score import NativeTable, ScoreTask, Split


@register_task
class KADID(ScoreTask):
    name = "kadid"
    label = "KADID"
    description = "KADID-10k synthetic distortions (dmos column, higher is better)"
    split_specs = {
        "test": Split(deqa="test_kadid_*.json", qalign="test_kadid.json",
                      names="qalign_kadid_test.txt", native="*",
                      expected={"deqa": 2000, "qalign": 2000, "native": 2000}),
        "train": Split(deqa="train_kadid_*.json"),
        "all": Split(native="*", expected={"native": 10125}),
    }
    folders = ("kadid", "kadid10k", "KADID10K")
    native_files = ("dmos.csv",)
    image_folders = ("images",)
    qalign_range = (1.0, 5.0)

    def read_native(self, folder: Path) -> NativeTable:
        path = folder / "dmos.csv"
        frame = read_csv(path, ["dist_img", "dmos"])
        refs = frame["ref_img"] if "ref_img" in frame.columns else [None] * len(frame)
        return NativeTable([ScoreRow(folder / "images" / str(name).strip(), mos,
                                     meta={"ref_img": ref})
                            for name, mos, ref in zip(frame["dist_img"], frame["dmos"], refs,
                                                      strict=True)],
                           path, (1.0, 5.0))
