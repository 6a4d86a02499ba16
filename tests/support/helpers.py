"""Data and folders the tests build, in one place (test modules do not import each other)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SUPPORT = Path(__file__).resolve().parent
# Plugins the command-line tests load with --include: a toy task and model, and a task and model
# that misbehave on request (a crash, a hang, a wrong answer) to test the run folder's contract.
TOY_PLUGIN = SUPPORT / "toy_plugin.py"
RT_PLUGIN = SUPPORT / "rt_plugin.py"


def make_toy_data(folder: Path, n: int = 40, corrupt: int = 0, missing: int = 0) -> Path:
    """n grey images whose brightness tracks their MOS (plus noise), listed in labels.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["name,mos"]
    for i in range(n):
        mos = float(rng.uniform(1, 5))
        name = f"img{i:03d}.png"
        lines.append(f"{name},{mos:.3f}")
        if i < corrupt:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        elif i < corrupt + missing:
            continue  # listed but not on disk
        else:
            level = np.clip(mos * 40 + rng.normal(0, 20), 0, 255)
            Image.fromarray(np.full((16, 16, 3), level, np.uint8)).save(folder / name)
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def fake_run_folder(results: Path, run_id: str, model: str,
                    tasks: dict[str, dict[str, Any]]) -> Path:
    """A run folder as the contract has it (manifest, one prediction record per task, sealed
    metrics) holding the given figures, for tests of the readers (tables, leaderboards) that
    need chosen figures, not a model run. `tasks`: task -> metric values, plus optional
    `problems`, `subset`, `status` and `kind`."""
    from qbench.results.folder import Manifest, RunFolder, records_digest

    folder = RunFolder(results / run_id)
    folder.path.mkdir(parents=True)
    facts, entries, rows = {}, {}, []
    for task, given in tasks.items():
        kind = given.get("kind", "score")
        facts[task] = {"kind": kind, "split": "test", "source": "fake", "split_source": "fake",
                       "lower_better": False, "mos_range": None, "expected_count": None,
                       "n": 100, "rows_read": 100, "rows_dropped": 0, "repeated": 0,
                       "notes": [], "problems": list(given.get("problems", [])), "options": {},
                       "truth_meta": [], "n_selected": 100, "data_fingerprint": "0"}
        row = {"task": task, "sample_id": "s0", "status": "ok", "score": 1.0}
        rows.append(row)
        figures = {k: v for k, v in given.items()
                   if k not in ("problems", "subset", "status", "kind")}
        problems = list(given.get("problems", []))
        entries[task] = {
            "task": task, "kind": kind,
            "status": given.get("status", "deviates" if problems else
                                "subset" if given.get("subset") else "ok"),
            "failure_reason": None, "split": "test", "source": "fake", "split_source": "fake",
            "notes": [], "problems": problems, "subset": given.get("subset"),
            "n_available": 100, "expected_count": None, "n": 100, "n_ok": 100,
            "parsed_fraction": 1.0, "failure_counts": {}, "failures": {}, **figures,
            "records_sha256": records_digest([row])}
    folder.write_manifest(Manifest(run_id=run_id, model=model, model_settings={},
                                   model_convention={"lower_better": False,
                                                     "score_range": None},
                                   config={}, tasks=facts))
    (folder.path / "predictions.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in rows))
    folder.write_metrics(entries)
    return folder.path
