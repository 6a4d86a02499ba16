"""The run folder: what a run leaves behind, read and written only here.

    <run>/manifest.json      schema_version, the run's identity (model, settings, split, limit,
                             shard, seed, task options), versions, and per task every fact a
                             later reader needs: kind, split and what defined it, ground-truth
                             direction and scale, expected count, dropped rows, notes, problems,
                             data fingerprint
    <run>/predictions.jsonl  one record per finished sample: the prediction, and the ground truth
                             (`truth`) that scoring needs, so the folder alone can be re-scored
    <run>/metrics.json       per task: coverage, every metric, status, intervals when asked
    <run>/errors.log         the first traceback of each model failure (runs append)
    <run>/predictions.rejected.jsonl   lines of predictions.jsonl that were not records, set aside
    <run>/.lock              held (flock) while a command writes the folder
    <run>/predictions.rank<r>.jsonl   a launcher rank's own records while a distributed run is
                             on (rank 0 folds them into predictions.jsonl; a dead run's are
                             folded when it is run again)

Every reader applies one rule to predictions.jsonl: a line counts when it is a JSON object with
a task, a sample id and a known status; a later record of a sample replaces an earlier one; any
other line (a torn last line, garbage, JSON that is not a record) is counted and, when the folder
is opened for writing, moved to predictions.rejected.jsonl. Good records are never dropped.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

from .kinds import kind_of
from .manifest import write_json, write_text
from .records import Prediction, Sample, Status
from .scoring import Conventions, Scored
from .task import DataError

SCHEMA_VERSION = 2
MANIFEST, PREDICTIONS, METRICS = "manifest.json", "predictions.jsonl", "metrics.json"
ERRORS, REJECTED, LOCK = "errors.log", "predictions.rejected.jsonl", ".lock"
RANK_PREDICTIONS = "predictions.rank{rank}.jsonl"   # per launcher rank while a run is on
STATUSES = frozenset(get_args(Status))


class RunFolderError(DataError):
    """A run folder that cannot be read or written as asked; one line naming the file."""


class RunFolderBusy(RunFolderError):
    """Another command holds the folder's lock."""


# ------------------------------------------------------------------------------ files

def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None


@contextlib.contextmanager
def locked(path: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `path` (released when the process ends, whatever happens).
    Without `wait`, a held lock is a RunFolderBusy naming the holder."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(handle, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunFolderBusy(f"{what} is in use by {holder}; wait for it to finish, or pass "
                                f"--wait to queue behind it") from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, (f"pid {os.getpid()} on {socket.gethostname()} since {now()}: "
                           f"{' '.join(sys.argv)}").encode(), 0)
        yield
    finally:
        os.close(handle)


# ------------------------------------------------------------------------------ manifest

@dataclass
class Manifest:
    """manifest.json. `config` holds the run settings; `tasks` the facts of each loaded task."""

    run_id: str
    model: str
    model_settings: dict[str, Any]
    model_convention: dict[str, Any]
    config: dict[str, Any]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_fingerprint: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    started: str = ""
    finished: str | None = None
    merged_from: list[str] | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        if not isinstance(data, dict):
            raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        required = ("run_id", "model", "model_settings", "model_convention", "config")
        missing = [k for k in required if k not in data]
        if missing:
            raise RunFolderError(f"{path}: not a qbench manifest (missing {', '.join(missing)})")
        version = data.get("schema_version", 1)   # round-1 folders have none
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RunFolderError(f"{path}: schema_version {version!r}; this qbench reads up to "
                                 f"{SCHEMA_VERSION}: upgrade qbench")
        manifest = cls(**{k: v for k, v in data.items() if k in names} | {"schema_version": version})
        if not isinstance(manifest.tasks, dict) or not isinstance(manifest.config, dict):
            raise RunFolderError(f"{path}: 'tasks' and 'config' must be JSON objects")
        return manifest

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def conventions(self, task: str) -> Conventions:
        convention = self.model_convention or {}
        score_range = convention.get("score_range")
        return Conventions(bool(convention.get("lower_better", False)),
                           tuple(map(float, score_range)) if score_range else None,
                           bool(self.tasks.get(task, {}).get("lower_better", False)))

    def identity(self) -> dict[str, Any]:
        """What defines the run (all but the shard index): merge refuses runs that differ."""
        shard = self.config.get("shard")
        return {"model": self.model, "model settings": self.model_settings,
                "split": self.config.get("split"), "limit": self.config.get("limit"),
                "seed": self.config.get("seed"), "task options": self.config.get("task_options") or {},
                "shard count": shard[1] if shard else None}


# ------------------------------------------------------------------------------ predictions

def record_of(line: bytes) -> dict[str, Any] | None:
    """A predictions.jsonl line as a record, or None when it is not one."""
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if (not isinstance(row, dict) or not isinstance(row.get("task"), str)
            or not isinstance(row.get("sample_id"), str) or row.get("status") not in STATUSES):
        return None
    return row


@dataclass
class PredictionRows:
    """predictions.jsonl as read: records by (task, sample id), and the lines that were not."""

    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)   # (line number, text)

    @classmethod
    def read(cls, path: Path) -> PredictionRows:
        out = cls()
        if not path.exists():
            return out
        data = path.read_bytes()
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            row = record_of(line)
            if row is None:
                out.bad.append((number, line.decode("utf-8", "replace")))
            else:
                out.rows[(row["task"], row["sample_id"])] = row
        return out

    def of(self, task: str) -> dict[str, dict[str, Any]]:
        return {sid: row for (t, sid), row in self.rows.items() if t == task}

    def note(self, path: Path, moved: bool) -> str | None:
        if not self.bad:
            return None
        where = f"moved to {path.with_name(REJECTED)}" if moved else "skipped"
        return (f"{path}: {len(self.bad)} line(s) that are not prediction records {where} "
                f"(first: line {self.bad[0][0]}); every other record kept")


def truth_of(sample: Sample, truth_meta: tuple[str, ...]) -> dict[str, Any]:
    """The ground truth stored beside a prediction: the kind's truth fields, and the sample meta
    the task's own metrics read."""
    truth = {f: getattr(sample, f) for f in kind_of(sample.kind).truth_fields
             if getattr(sample, f) is not None}
    meta = {key: sample.meta[key] for key in truth_meta if key in sample.meta}
    return truth | ({"meta": meta} if meta else {})


def sample_of(task: str, kind: str, sample_id: str, truth: dict[str, Any]) -> Sample:
    """A sample rebuilt from its stored truth (no images: scoring needs none)."""
    allowed = set(kind_of(kind).truth_fields)
    return Sample(id=sample_id, task=task, kind=kind, images=(),
                  meta=dict(truth.get("meta") or {}),
                  **{k: v for k, v in truth.items() if k in allowed})


class PredictionLog:
    """predictions.jsonl opened for a run: the good records of an earlier run are kept (the file
    is rewritten without the lines that were not records, which go to the side file), new
    records are appended and flushed per batch."""

    def __init__(self, path: Path, known: dict[tuple[str, str], dict[str, Any]] | None = None):
        """`known`: records finished elsewhere (a rank's log knows rank 0's), never rewritten."""
        self.path = path
        found = PredictionRows.read(path)
        self.rows = dict(known or {}) | found.rows
        self.notes = [n for n in [found.note(path, moved=True)] if n]
        if found.bad:
            with path.with_name(REJECTED).open("a", encoding="utf-8") as side:
                for number, text in found.bad:
                    side.write(json.dumps({"line": number, "text": text, "set_aside": now()}) + "\n")
            write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                                     for r in found.rows.values()))
        self._file = path.open("a", encoding="utf-8")

    def done(self, task: str) -> set[str]:
        """Sample ids whose prediction stands; a transient model error is tried again."""
        return {sid for (t, sid), row in self.rows.items()
                if t == task and not (row["status"] == "model_error" and row.get("transient", True))}

    def write(self, rows: list[dict[str, Any]]) -> None:
        try:
            for row in rows:
                self.rows[(row["task"], row["sample_id"])] = row
                self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            self._file.flush()
        except OSError as exc:   # a full disk says which file it could not write
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def predictions(self, task: str) -> dict[str, Prediction]:
        return {sid: Prediction.from_json(row) for (t, sid), row in self.rows.items() if t == task}

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ one folder

class RunFolder:
    """One run's folder. Writers hold its lock; readers (compare, report, merge) need none."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def exists(self) -> bool:
        return self.file(MANIFEST).is_file()

    def lock(self, *, wait: bool = False) -> contextlib.AbstractContextManager[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        return locked(self.file(LOCK), f"run folder {self.path}", wait=wait)

    def manifest(self) -> Manifest:
        if not self.path.is_dir():
            raise RunFolderError(f"run folder not found: {self.path}")
        if not self.exists:
            raise RunFolderError(f"{self.path} is not a run folder (no {MANIFEST})")
        return Manifest.from_json(read_json(self.file(MANIFEST)), self.file(MANIFEST))

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.file(MANIFEST), manifest.to_json())

    def metrics(self) -> dict[str, dict[str, Any]]:
        path = self.file(METRICS)
        if not path.exists():
            return {}
        data = read_json(path)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise RunFolderError(f"{path}: expected an object of per-task metrics")
        return data

    def write_metrics(self, metrics: dict[str, dict[str, Any]]) -> None:
        write_json(self.file(METRICS), metrics)

    def open_log(self) -> PredictionLog:
        return PredictionLog(self.file(PREDICTIONS))

    def rank_log(self, rank: int) -> PredictionLog:
        """A launcher rank's own log; it knows what rank 0's log holds, and writes only its own."""
        return PredictionLog(self.file(RANK_PREDICTIONS.format(rank=rank)),
                             known=PredictionRows.read(self.file(PREDICTIONS)).rows)

    def fold_rank_logs(self, log: PredictionLog, *, remove: bool) -> list[str]:
        """Copy the records of every rank's log (this run's, or a dead earlier run's) that the
        run's log does not hold yet into it; `remove` the rank logs once no rank writes them.
        Returns notes on lines that were not records."""
        notes = []
        for path in sorted(self.path.glob(RANK_PREDICTIONS.format(rank="*"))):
            found = PredictionRows.read(path)
            log.write([row for key, row in found.rows.items() if log.rows.get(key) != row])
            note = found.note(path, moved=False)
            notes += [note] if note else []
            if remove:
                path.unlink()
        return notes

    def record_error(self, heading: str, trace: str) -> Path:
        path = self.file(ERRORS)
        with path.open("a", encoding="utf-8") as f:
            f.write(f"== {now()} {heading}\n{trace.rstrip()}\n\n")
        return path


@dataclass
class RunView:
    """A run folder as read by compare, report and merge: nothing is written."""

    folder: RunFolder
    manifest: Manifest
    metrics: dict[str, dict[str, Any]]
    rows: PredictionRows
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunView:
        folder = RunFolder(path)
        manifest = folder.manifest()
        if not folder.file(PREDICTIONS).is_file():
            raise RunFolderError(f"{folder.path} has no {PREDICTIONS}")
        rows = PredictionRows.read(folder.file(PREDICTIONS))
        view = cls(folder, manifest, folder.metrics(), rows)
        note = rows.note(folder.file(PREDICTIONS), moved=False)
        if note:
            view.notes.append(note)
        return view

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def model(self) -> str:
        return self.manifest.model

    @property
    def label(self) -> str:
        return f"{self.model} ({self.run_id})"

    def tasks(self) -> list[str]:
        """Tasks with metrics and predictions, in the order the run wrote them."""
        return [name for name in self.metrics if self.rows.of(name)]

    def require_tasks(self) -> RunView:
        if not self.tasks():
            raise RunFolderError(f"{self.path} has no scored task yet (metrics.json lists none "
                                 "with predictions)")
        return self

    def kind(self, task: str) -> str:
        return str(self.manifest.tasks.get(task, {}).get("kind") or self.metrics[task].get("kind"))

    def samples(self, task: str) -> list[Sample]:
        return [sample_of(task, self.kind(task), sid, row.get("truth") or {})
                for sid, row in self.rows.of(task).items()]

    def predictions(self, task: str) -> dict[str, Prediction]:
        return {sid: Prediction.from_json(row) for sid, row in self.rows.of(task).items()}

    def scored(self, task: str) -> Scored:
        return Scored.of(task, self.kind(task), self.samples(task), self.predictions(task),
                         self.manifest.conventions(task))
