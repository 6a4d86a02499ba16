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
import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast, get_args

from pydantic import TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from qbench.core.files import locked, now, write_json, write_text
from qbench.core.kinds import kind_of
from qbench.core.records import Prediction, Sample, Status
from qbench.core.task import DataError, SplitFacts, TaskData
from qbench.scoring.metrics import METRICS as METRIC_REGISTRY
from qbench.scoring.metrics import Conventions, Scored

# 3: manifest.json and each metrics.json entry carry a digest of their own content, and each
# metrics entry the digest of the prediction records it was computed from.
SCHEMA_VERSION = 3
MANIFEST, PREDICTIONS, METRICS = "manifest.json", "predictions.jsonl", "metrics.json"
ERRORS, REJECTED, LOCK = "errors.log", "predictions.rejected.jsonl", ".lock"
# The records digest of each task as of the log's last write, keyed by the log's stat: readers
# of a finished folder need not parse its predictions again to check its metrics.
RECORDS_CACHE = ".records-sha256.json"
RANK_PREDICTIONS = "predictions.rank{rank}.jsonl"   # per launcher rank while a run is on
STATUSES = frozenset(get_args(Status))


class RunFolderError(DataError):
    """A run folder that cannot be read or written as asked; one line naming the file."""


# ------------------------------------------------------------------------------ files

def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None


# ------------------------------------------------------------------------------ the contract
# The JSON entries of the folder, typed: writers build them, readers validate what they read
# against them (strictly: a count written as text or true is not a count). A file that does not
# validate, or whose digest does not match its content, is reported in one line naming the
# folder, file and field, and is left out of every table; it never stops a reader.

class IntervalEntry(TypedDict):
    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    undefined: int


class TaskFacts(SplitFacts):
    """manifest.json `tasks.<name>`: what the task's load learned (TaskData.describe) and what
    the run selected from it."""

    kind: Literal["score", "degradation", "comparison"]
    truth_meta: list[str]
    n_selected: int
    data_fingerprint: str


def task_facts(kind: str, data: TaskData, truth_meta: Iterable[str], n_selected: int,
               data_fingerprint: str) -> TaskFacts:
    """manifest.json's entry for a loaded task (the one builder of TaskFacts)."""
    return cast(TaskFacts, {"kind": kind, **data.describe(), "truth_meta": list(truth_meta),
                            "n_selected": n_selected, "data_fingerprint": data_fingerprint})


class TaskMetrics(TypedDict):
    """metrics.json `<task>`: its status and why, the split's facts, coverage, and every metric
    that applies (one key per registered metric name, checked by `metric_problem`)."""

    task: str
    kind: Literal["score", "degradation", "comparison"]
    status: Literal["ok", "deviates", "subset", "failed"]
    failure_reason: str | None
    split: str
    source: str
    split_source: str
    notes: list[str]
    problems: list[str]          # how the measured samples differ from the published split
    subset: str | None           # --limit or an unmerged shard: a part of the split, on purpose
    n_available: int
    expected_count: int | None
    n: int
    n_ok: int
    parsed_fraction: float
    failure_counts: dict[str, int]
    failures: dict[str, list[str]]
    ci: NotRequired[dict[str, IntervalEntry]]
    wall_s: NotRequired[float]
    records_sha256: str          # of the task's prediction records (records_digest)


class ModelConventionEntry(TypedDict):
    lower_better: bool
    score_range: list[float] | None


class ManifestFile(TypedDict):
    """manifest.json's top level (the task entries are TaskFacts in this schema)."""

    run_id: str
    model: str
    model_settings: dict[str, Any]
    model_convention: ModelConventionEntry
    config: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    model_fingerprint: NotRequired[str | None]
    versions: NotRequired[dict[str, str]]
    git_commit: NotRequired[str | None]
    started: NotRequired[str]
    finished: NotRequired[str | None]
    merged_from: NotRequired[list[str] | None]


_MANIFEST = TypeAdapter(ManifestFile)
_FACTS = TypeAdapter(TaskFacts)
_METRICS = TypeAdapter(TaskMetrics)
DIGEST = "digest"


def content_digest(entry: dict[str, Any]) -> str:
    """sha256 of an entry's JSON without its own digest: a check against damage and hand edits
    (anyone can recompute it; it is not a signature)."""
    body = {k: v for k, v in entry.items() if k != DIGEST}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def sealed(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as JSON would give it back, with its digest."""
    plain = json.loads(json.dumps({k: v for k, v in entry.items() if k != DIGEST}, default=str))
    return plain | {DIGEST: content_digest(plain)}


def seal_problem(entry: dict[str, Any]) -> str | None:
    if entry.get(DIGEST) != content_digest(entry):
        return "changed after qbench wrote it (its digest does not match its content)"
    return None


def records_digest(rows: Iterable[dict[str, Any]]) -> str:
    """sha256 of one task's prediction records, in sample-id order: what a metrics entry was
    computed from."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["sample_id"]):
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _where(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


def type_problem(adapter: TypeAdapter, entry: Any, prefix: str) -> str | None:
    """The first field of `entry` that does not have its contract type, in one line."""
    try:
        adapter.validate_python(entry, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = _where((prefix, *error["loc"]))
        value = repr(error.get("input"))
        value = value if len(value) <= 40 else value[:37] + "..."
        return f"{field_name}: {error['msg'].lower()} (holds {value})"
    return None


def _numbers(value: Any) -> bool:
    """None, a finite number, or lists / objects of them (per-class accuracies, a confusion
    matrix with its labels)."""
    if value is None or isinstance(value, str):
        return value is None
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(isinstance(v, str) or _numbers(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _numbers(v) for k, v in value.items())
    return False


def metric_problem(entry: dict[str, Any], prefix: str) -> str | None:
    """The first registered metric whose value in `entry` is not a number (or None, or numbers
    by class)."""
    names = {m.name for m in METRIC_REGISTRY} | {"n_scored"}
    for name in sorted(names & entry.keys()):
        if not _numbers(entry[name]):
            value = repr(entry[name])
            return (f"{prefix}.{name}: not a number "
                    f"(holds {value if len(value) <= 40 else value[:37] + '...'})")
    return None


def metrics_entry_problem(task: str, entry: Any) -> str | None:
    """Why a metrics.json entry cannot be shown as measured, or None."""
    if not isinstance(entry, dict):
        return f"{task}: expected an object, got {type(entry).__name__}"
    problem = type_problem(_METRICS, entry, task) or metric_problem(entry, task)
    if problem is None and (reason := seal_problem(entry)):
        problem = f"{task}: {reason}"
    return problem


# ------------------------------------------------------------------------------ manifest

@dataclass
class Manifest:
    """manifest.json. `config` holds the run settings; `tasks` the facts of each loaded task."""

    run_id: str
    model: str
    model_settings: dict[str, Any]
    model_convention: dict[str, Any]
    config: dict[str, Any]
    tasks: dict[str, TaskFacts] = field(default_factory=dict)
    model_fingerprint: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    started: str = ""
    finished: str | None = None
    merged_from: list[str] | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        """The manifest as written, or RunFolderError naming the field that is not. Folders of
        earlier schema versions (no digests) are read as they are; `verified` says which."""
        if not isinstance(data, dict):
            raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("run_id", "model", "model_settings", "model_convention", "config")
                   if k not in data]
        if missing:
            raise RunFolderError(f"{path}: not a qbench manifest (missing {', '.join(missing)})")
        version = data.get("schema_version", 1)   # round-1 folders have none
        if isinstance(version, bool) or not isinstance(version, int) \
                or not 1 <= version <= SCHEMA_VERSION:
            newer = isinstance(version, int) and not isinstance(version, bool) \
                and version > SCHEMA_VERSION
            raise RunFolderError(f"{path}: schema_version {version!r}"
                                 + ("; this qbench reads up to "
                                    f"{SCHEMA_VERSION}: upgrade qbench" if newer else
                                    f": not a version qbench wrote (1 to {SCHEMA_VERSION})"))
        if problem := type_problem(_MANIFEST, data, "manifest"):
            raise RunFolderError(f"{path}: {problem.removeprefix('manifest.')}")
        if version == SCHEMA_VERSION:
            for task, facts in data["tasks"].items():
                if problem := type_problem(_FACTS, facts, f"tasks.{task}"):
                    raise RunFolderError(f"{path}: {problem}")
            if problem := seal_problem(data):
                raise RunFolderError(f"{path}: {problem}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names} | {"schema_version": version})

    def to_json(self) -> dict[str, Any]:
        return sealed(asdict(self) | {"schema_version": SCHEMA_VERSION})

    @property
    def verified(self) -> bool:
        """Written by this schema, whose digests let a reader check every figure."""
        return self.schema_version == SCHEMA_VERSION

    def conventions(self, task: str) -> Conventions:
        convention = self.model_convention or {}
        scale = convention.get("score_range")
        facts = self.tasks.get(task)
        return Conventions(bool(convention.get("lower_better", False)),
                           (float(scale[0]), float(scale[1])) if scale else None,
                           bool(facts.get("lower_better", False)) if facts is not None else False)

    def identity(self) -> dict[str, Any]:
        """What defines the run (all but the shard index): merge refuses runs that differ."""
        shard = self.config.get("shard")
        return {"model": self.model, "model settings": self.model_settings,
                "split": self.config.get("split"), "limit": self.config.get("limit"),
                "seed": self.config.get("seed"),
                "task options": self.config.get("task_options") or {},
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

    def digests(self) -> dict[str, str]:
        """records_digest of every task the log holds."""
        by_task: dict[str, list[dict[str, Any]]] = {}
        for (task, _), row in self.rows.items():
            by_task.setdefault(task, []).append(row)
        return {task: records_digest(rows) for task, rows in by_task.items()}

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
    spec = kind_of(kind)
    allowed = set(spec.truth_fields)
    return Sample(id=sample_id, task=task, kind=spec.name, images=(),
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
                    side.write(json.dumps({"line": number, "text": text, "set_aside": now()})
                               + "\n")
            write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                                     for r in found.rows.values()))
        self._file = path.open("a", encoding="utf-8")

    def done(self, task: str) -> set[str]:
        """Sample ids whose prediction stands; a transient model error is tried again."""
        return {sid for (t, sid), row in self.rows.items()
                if t == task
                and not (row["status"] == "model_error" and row.get("transient", True))}

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

    @contextlib.contextmanager
    def lock(self, *, wait: bool = False) -> Iterator[None]:
        """Hold the folder for writing. Temporary files a killed writer left behind go first:
        no other writer can be using them while the lock is held."""
        self.path.mkdir(parents=True, exist_ok=True)
        with locked(self.file(LOCK), f"run folder {self.path}", wait=wait):
            for stale in self.path.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
            yield

    def manifest(self) -> Manifest:
        if not self.path.is_dir():
            raise RunFolderError(f"run folder not found: {self.path}")
        if not self.exists:
            raise RunFolderError(f"{self.path} is not a run folder (no {MANIFEST})")
        return Manifest.from_json(read_json(self.file(MANIFEST)), self.file(MANIFEST))

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.file(MANIFEST), manifest.to_json())

    def metrics(self) -> dict[str, Any]:
        """metrics.json as written: an object of per-task entries, each unchecked (readers that
        show figures use `verified`)."""
        path = self.file(METRICS)
        if not path.exists():
            return {}
        data = read_json(path)
        if not isinstance(data, dict):
            raise RunFolderError(f"{path}: expected an object of per-task metrics")
        return data

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Each entry sealed with its digest (an entry carried over from an earlier schema, with
        no records digest, is written as it was: readers leave it out until it is re-scored)."""
        write_json(self.file(METRICS), {task: sealed(entry) if "records_sha256" in entry
                                        else entry for task, entry in metrics.items()})

    def _log_signature(self) -> list[int] | None:
        try:
            stat = self.file(PREDICTIONS).stat()
        except FileNotFoundError:
            return None
        return [stat.st_size, stat.st_mtime_ns, stat.st_ino]

    def write_records_cache(self, digests: dict[str, str]) -> None:
        """Remember the log's records digests as of its present state (call when no one writes
        the log any more)."""
        write_json(self.file(RECORDS_CACHE), {"signature": self._log_signature(),
                                              "tasks": digests})

    def records_digests(self, rows: PredictionRows | None = None) -> dict[str, str]:
        """records_digest per task of the log as it is now: from `rows` when given, from the
        cache when the log has not changed since it was written, else by reading the log."""
        if rows is not None:
            return rows.digests()
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            cached = json.loads(self.file(RECORDS_CACHE).read_text(encoding="utf-8"))
            if cached["signature"] == self._log_signature() and isinstance(cached["tasks"], dict):
                return {str(k): str(v) for k, v in cached["tasks"].items()}
        return PredictionRows.read(self.file(PREDICTIONS)).digests()

    def verified(self, rows: PredictionRows | None = None
                 ) -> tuple[Manifest, dict[str, Any], dict[str, str]]:
        """The manifest and the metrics entries a reader may show as measured, and by task a
        one-line note for each entry left out (wrong type, digest, or records that are not the
        ones it was computed from). RunFolderError when the folder as a whole cannot be shown."""
        manifest = self.manifest()
        if not manifest.verified:
            raise RunFolderError(
                f"{self.path}: written by an older qbench (schema {manifest.schema_version}), "
                "whose figures cannot be checked against its predictions; run its command again "
                "to re-score it (no sample is predicted again)")
        entries: dict[str, Any] = {}
        left_out: dict[str, str] = {}
        metrics = self.metrics()
        digests = self.records_digests(rows) if metrics else {}
        for task, entry in metrics.items():
            problem = metrics_entry_problem(task, entry)
            if problem is None and task not in manifest.tasks:
                problem = f"{task}: the manifest has no such task"
            if problem is None and (entry["task"] != task
                                    or entry["kind"] != manifest.tasks[task]["kind"]):
                problem = f"{task}: its task or kind differs from the manifest's"
            if problem is None and entry["records_sha256"] != digests.get(task):
                problem = (f"{task}: its figures were not computed from the predictions in "
                           f"{PREDICTIONS} (records digest differs)")
            if problem is None:
                entries[task] = entry
            else:
                left_out[task] = f"left out {self.path}: {METRICS} {problem}"
        return manifest, entries, left_out

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

    def clear(self) -> None:
        """Remove every file of the contract (the lock stays): the folder is written anew."""
        for name in (MANIFEST, PREDICTIONS, METRICS, ERRORS, REJECTED, RECORDS_CACHE):
            with contextlib.suppress(FileNotFoundError):
                self.file(name).unlink()
        for rank_log in self.path.glob(RANK_PREDICTIONS.format(rank="*")):
            rank_log.unlink()

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
    left_out: dict[str, str] = field(default_factory=dict)   # task -> why its figures are not shown

    @classmethod
    def load(cls, path: Path) -> RunView:
        """The folder's verified figures (RunFolder.verified): entries that do not check out are
        left out, each with a note."""
        folder = RunFolder(path)
        folder.manifest()   # "not found" / "not a run folder" before anything else
        if not folder.file(PREDICTIONS).is_file():
            raise RunFolderError(f"{folder.path} has no {PREDICTIONS}")
        rows = PredictionRows.read(folder.file(PREDICTIONS))
        manifest, metrics, left_out = folder.verified(rows)
        view = cls(folder, manifest, metrics, rows, list(left_out.values()), left_out)
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
            why = (f": {self.notes[0]}" if self.notes else
                   " (metrics.json lists none with predictions)")
            raise RunFolderError(f"{self.path} has no scored task to show{why}")
        return self

    def kind(self, task: str) -> str:
        facts = self.manifest.tasks.get(task)
        return str((facts.get("kind") if facts is not None else None)
                   or self.metrics[task].get("kind"))

    def samples(self, task: str) -> list[Sample]:
        return [sample_of(task, self.kind(task), sid, row.get("truth") or {})
                for sid, row in self.rows.of(task).items()]

    def predictions(self, task: str) -> dict[str, Prediction]:
        return {sid: Prediction.from_json(row) for sid, row in self.rows.of(task).items()}

    def scored(self, task: str) -> Scored:
        return Scored.of(task, self.kind(task), self.samples(task), self.predictions(task),
                         self.manifest.conventions(task))
