"""CSIQ: 866 distorted images, DMOS 0-1, LOWER is better (REFERENCE §2). The default `test` is
the whole set, as the published Q-Insight figures use it. `qalign-750` is the 750 images of
Q-Align's csiq.json. Read as published, that file lists 150 'contrast' images (levels 1-5, their
gt_scores equal to the AWGN images' of the same name and level) and no 'blur' image; with the
native release, the list's names that the release lacks are reported and the count check fails.
"""
from __future__ import annotations

from pathlib import Path

from qbench import register_task
from qbench.tasks._formats import ScoreRow, index_images, read_xlsx
from qbench.tasks._score import NativeTable, ScoreTask, Split

SHEET_FILE = "csiq.DMOS.xlsx"
# The sheet's dst_type words where the image file names spell the type differently.
FILE_TYPE = {"noise": "awgn"}


def image_name(image: object, dst_type: str, level: str | float) -> str:
    """`<img>.<TYPE>.<lev>.png`, e.g. (1600, 'jpeg 2000', 3) -> '1600.jpeg2000.3.png'."""
    word = str(dst_type).strip().lower()
    kind = FILE_TYPE.get(word, word.replace(" ", ""))
    # a numeric name column turns float when the sheet has a blank cell: 1600.0 -> 1600
    stem = (str(int(image)) if isinstance(image, float) and image.is_integer()
            else str(image).strip())
    return f"{stem}.{kind}.{int(float(level))}.png"


@register_task
class CSIQ(ScoreTask):
    name = "csiq"
    label = "CSIQ"
    description = "CSIQ synthetic distortions (DMOS 0-1, lower is better; whole set)"
    lower_better = True
    split_specs = {
        "test": Split(deqa="test_csiq_*.json", native="*", expected={"native": 866}),
        "qalign-750": Split(qalign="csiq.json", names="qalign_csiq.txt", native="*",
                            expected={"qalign": 750, "native": 750}),
    }
    folders = ("csiq", "CSIQ")
    native_files = (SHEET_FILE,)
    image_folders = ("dst_imgs",)
    qalign_range = (0.0, 1.0)

    def read_native(self, folder: Path) -> NativeTable:
        path = folder / SHEET_FILE
        frame = read_xlsx(path, ["image", "dst_type", "dst_lev", "dmos"], sheet="all_by_image",
                          header_row=4)
        found = index_images([folder / "dst_imgs"])
        rows = []
        for image, dst_type, level, dmos in zip(frame["image"], frame["dst_type"], frame["dst_lev"],
                                                frame["dmos"], strict=True):
            try:
                name = image_name(image, dst_type, level)
            except (TypeError, ValueError):   # a blank or non-numeric level: the row is dropped
                rows.append(ScoreRow(folder / "dst_imgs" / str(image), float("nan")))
                continue
            fallback = folder / "dst_imgs" / name.split(".")[1] / name
            rows.append(ScoreRow(found.get(name.lower(), fallback), dmos,
                                 meta={"dst_type": str(dst_type).strip(),
                                       "dst_lev": int(float(level))}))
        return NativeTable(rows, path, (0.0, 1.0))
