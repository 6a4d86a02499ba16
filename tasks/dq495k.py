"""DQ-495K degradation test set: per-image meta records {img_ref, img_lq, distortion_class,
distortion_name, severity} (severity 1..5, 0 = no distortion; JPEG and compression are one
class). The test set is not released: users bring theirs, as a JSON list (`test.json`), JSON
lines (`test.jsonl`) or a folder of per-image JSON files (`metas/test/*.json`). Folders written
by qbench's synthetic generator (tasks/synthetic.py) are in the first form."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qbench import DataError, Sample, Task, TaskData, register_task
from qbench.core.protocol import canonical_class, canonical_level
from qbench.results.tables import set_default_tasks
from qbench.tasks._formats import drop_note, read_json_records, safe_path

META_FORMS = ("{split}.json", "{split}.jsonl", "metas/{split}")  # tried in this order


def meta_places(split: str) -> tuple[str, ...]:
    """Where the records of a split may lie, relative to the task folder."""
    return tuple(form.format(split=split) for form in META_FORMS)


def read_records(meta: Path) -> tuple[list[Any], int]:
    """The records of a JSON list, a JSON-lines file or a folder of per-image JSON files, and
    the count of lines/files that were not JSON."""
    if meta.is_dir():
        files = sorted(meta.rglob("*.json"))
        if not files:
            raise DataError(f"{meta}: folder holds no per-image *.json meta records")
        return _parse_each([f.read_text(errors="replace") for f in files])
    if meta.suffix == ".jsonl":
        try:
            lines = meta.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta}: cannot read: {exc}") from None
        return _parse_each([line for line in lines if line.strip()])
    return read_json_records(meta), 0


def _parse_each(texts: list[str]) -> tuple[list[Any], int]:
    records, bad = [], 0
    for text in texts:
        try:
            records.append(json.loads(text))
        except ValueError:
            bad += 1
    return records, bad


def read_dq_meta(folder: Path, meta: Path, task: str) -> TaskData:
    """Samples from DQ-style meta records (image paths relative to `folder`); unusable records
    are dropped and counted in the notes."""
    records, unparsed = read_records(meta)
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
        samples.append(Sample(id=image, task=task, kind="degradation",
                              images=(str(safe_path(folder, image, meta)),),
                              distortion_class=cls, severity=level,
                              meta={"distortion_name": record.get("distortion_name"),
                                    "img_ref": record.get("img_ref")}))
    notes = (drop_note(unparsed, "entries that are not JSON", meta)
             + drop_note(bad, "meta records without a valid img_lq/distortion_class/severity",
                         meta))
    return TaskData(samples, notes, source=str(meta), rows_read=len(records) + unparsed,
                    rows_dropped=unparsed + bad)


@register_task
class DQ495K(Task):
    name = "dq495k"
    kind = "degradation"
    description = "DQ-495K degradation test set (user supplied), Q-Insight Table 2 protocol"
    expected_count = {"test": 1000}
    folders = ("dq495k", "DQ-495K")
    markers = meta_places("test")

    def load(self, folder: Path, split: str) -> TaskData:
        for place in meta_places(split):
            if (folder / place).exists():
                return read_dq_meta(folder, folder / place, self.name)
        raise DataError(f"{self.name}: none of {', '.join(meta_places(split))} found in {folder}")


set_default_tasks("degradation", ("dq495k",))   # Q-Insight's table of this set
