"""DQ-495K degradation test set: per-image meta records {img_ref, img_lq, distortion_class,
distortion_name, severity} (severity 1..5, 0 = no distortion), as a JSON list. Folders written
by qbench's synthetic generator (tasks/synthetic.py) use the same format."""
from __future__ import annotations

import json
from pathlib import Path

from qbench import DataError, Sample, Task, TaskData, register_task
from qbench.protocol import canonical_class, canonical_level


def read_dq_meta(folder: Path, meta: Path, task: str) -> TaskData:
    """Samples from a JSON list of DQ-style meta records; unusable records are dropped and
    counted in the notes."""
    try:
        records = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta}: cannot read meta records: {exc}") from None
    if not isinstance(records, list):
        raise DataError(f"{meta}: expected a JSON list of meta records, got {type(records).__name__}")
    samples, bad = [], 0
    for record in records:
        try:
            cls = canonical_class(record["distortion_class"])
            level = canonical_level(record["severity"])
            image = str(record["img_lq"])
        except (KeyError, TypeError):
            bad += 1
            continue
        if cls is None or level is None or (cls == "null") != (level == "null"):
            bad += 1
            continue
        samples.append(Sample(id=image, task=task, kind="degradation", images=(str(folder / image),),
                              distortion_class=cls, severity=level,
                              meta={"distortion_name": record.get("distortion_name"),
                                    "img_ref": record.get("img_ref")}))
    notes = [f"dropped {bad} meta records without a valid img_lq/distortion_class/severity"] if bad else []
    return TaskData(samples, notes, source=str(meta))


@register_task
class DQ495K(Task):
    name = "dq495k"
    kind = "degradation"
    description = "DQ-495K degradation test set (user supplied), Q-Insight Table 2 protocol"
    expected_count = {"test": 1000}
    markers = ("test.json",)

    def load(self, folder: Path, split: str) -> TaskData:
        return read_dq_meta(folder, folder / f"{split}.json", self.name)
