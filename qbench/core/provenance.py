"""Where a run's inputs came from: package versions, the git commit, fingerprints of weights, data
and samples, and the record `qbench fetch` leaves in a task folder it filled."""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from qbench.core.records import Sample

_PACKAGES = ("qbench", "torch", "torchvision", "transformers", "vllm", "trl", "numpy", "scipy",
             "pillow", "pandas")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """Commit of the qbench checkout this code runs from (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def fingerprint_path(path: Path) -> str:
    """Hash of (relative name, size, mtime) of a file or of every file under a folder: cheap
    enough for 15 GB of weights, and it changes when any file does."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if file != path else file.name}"
                      f"|{stat.st_size}|{int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def fingerprint_samples(samples: list[Sample]) -> str:
    """Hash of the ids, image paths, ground truth and preprocessing of a task's samples."""
    digest = hashlib.sha256()
    for s in samples:
        fields = [s.id, s.images, s.mos, s.distortion_class, s.severity, s.choice, s.group]
        if s.resize_short_side:   # only when set, so fingerprints of earlier runs stay valid
            fields.append(s.resize_short_side)
        digest.update(json.dumps(fields).encode())
    return digest.hexdigest()[:16]


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


RECORD = "qbench-source.json"   # in a task folder `qbench fetch` filled: what filled it
RECORD_VERSION = 1


def read_record(folder: Path) -> list[dict[str, Any]] | None:
    """What `qbench fetch` recorded filling `folder` (None: not fetched, or a damaged record,
    which `qbench fetch` treats as not fetched)."""
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    sources = data.get("sources") if isinstance(data, dict) else None
    return sources if isinstance(sources, list) else None
