"""AGIQA-3K: 2,982 AI-generated images, `mos_quality` 0-~5, higher is better (REFERENCE §2); a
cross-dataset set, tested whole (the DeQA meta, Q-Align's agi.json or the authors' data.csv)."""
from __future__ import annotations

from pathlib import Path

from qbench import register_task
from qbench.tasks._formats import ScoreRow, index_images, read_csv
from qbench.tasks._score import NativeTable, ScoreTask, Split


@register_task
class AGIQA3K(ScoreTask):
    name = "agiqa3k"
    label = "AGIQA"
    description = "AGIQA-3K AI-generated images (perceptual quality MOS; whole set)"
    split_specs = {
        "test": Split(deqa="test_agiqa_*.json", qalign="agi.json", native="*",
                      expected={"qalign": 2982, "native": 2982}),
    }
    folders = ("agiqa3k", "AGIQA-3K", "AGIQA3K")
    native_files = ("data.csv",)
    qalign_range = (0.0, 5.0)

    def read_native(self, folder: Path) -> NativeTable:
        path = folder / "data.csv"
        frame = read_csv(path, ["name", "mos_quality"])
        found = index_images([folder])
        prompts = frame["prompt"] if "prompt" in frame.columns else [None] * len(frame)
        columns = zip(frame["name"], frame["mos_quality"], prompts, strict=True)
        return NativeTable([ScoreRow(found.get(str(name).strip().lower(),
                                               folder / str(name).strip()),
                                     mos, meta={"prompt": prompt})
                            for name, mos, prompt in columns],
                           path, (0.0, 5.0))
