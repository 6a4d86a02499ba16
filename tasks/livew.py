"""LIVE In the Wild Image Quality Challenge (CLIVE): 1,169 photographs, MOS ~3-92 (REFERENCE
§2). The default `test` is all 1,169, as Q-Align's livec.json lists them (its first seven,
t1-t7, are the release's training images); `without-training-images` leaves those seven out
(1,162), the challenge's own test set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from qbench import DataError, register_task
from qbench.tasks._formats import ScoreRow, index_images
from qbench.tasks._score import NativeTable, ScoreTask, Split

NAMES_MAT, MOS_MAT = "Data/AllImages_release.mat", "Data/AllMOS_release.mat"
TRAINING_IMAGES = 7


def mat_variable(path: Path, key: str) -> np.ndarray:
    try:
        content = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"{path}: not a readable MAT file: {str(exc).splitlines()[0]}") from None
    if key not in content:
        found = ", ".join(k for k in content if not k.startswith("__")) or "none"
        raise DataError(f"{path}: no variable {key!r}; variables found: {found}")
    return content[key]


def cell_strings(cells: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (loaded as nested object arrays) as a flat list."""
    out = []
    for cell in np.ravel(cells):
        while isinstance(cell, np.ndarray):
            cell = cell.ravel()[0] if cell.size else ""
        out.append(str(cell).strip())
    return out


@register_task
class LiveWild(ScoreTask):
    name = "livew"
    label = "LIVE-W"
    description = "LIVE-Wild (CLIVE) in-the-wild photographs (MOS 0-100; whole set)"
    split_specs = {
        "test": Split(deqa="test_livew_*.json", qalign="livec.json", native="*",
                      expected={"qalign": 1169, "native": 1169}),
        "without-training-images": Split(native="test", expected={"native": 1162}),
    }
    folders = ("livew", "ChallengeDB_release", "LIVE-WILD")
    native_files = (NAMES_MAT,)
    image_folders = ("Images",)
    qalign_range = (0.0, 100.0)

    def read_native(self, folder: Path) -> NativeTable:
        names = cell_strings(mat_variable(folder / NAMES_MAT, "AllImages_release"))
        scores = np.ravel(mat_variable(folder / MOS_MAT, "AllMOS_release")).tolist()
        if len(names) != len(scores):
            raise DataError(f"{folder / NAMES_MAT}: {len(names)} image names but {len(scores)} "
                            f"scores in {MOS_MAT}")
        found = index_images([folder / "Images"])
        return NativeTable([ScoreRow(found.get(name.lower(), folder / "Images" / name), mos,
                                     "train" if i < TRAINING_IMAGES else "test")
                            for i, (name, mos) in enumerate(zip(names, scores, strict=True))],
                           folder / NAMES_MAT, (0.0, 100.0))
