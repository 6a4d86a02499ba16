"""The runner: task loads samples → model predicts batches → predictions stream to JSONL →
metrics aggregate → results are written. Re-running the same command resumes."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from . import manifest as mf
from .images import DEFAULT_MAX_PIXELS, prefetch_batches
from .model import Model, ModelConfig, ModelError
from .records import Prediction, Sample
from .registry import TASKS, RegistryError, create_model, get_task, include, load_plugins
from .results import update_leaderboard
from .task import DataError, ModelConvention, Task, TaskData
from .uncertainty import task_intervals


@dataclass
class RunConfig:
    model: str = "stats"
    tasks: list[str] = field(default_factory=lambda: ["demo-degradation", "demo-score"])
    model_path: Path | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    data_root: Path | None = None
    data_paths: dict[str, Path] = field(default_factory=dict)  # per-task folder overrides
    split: str | None = None
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    shard: tuple[int, int] | None = None   # (index, count)
    output_dir: Path = Path("results")
    run_name: str | None = None
    device: str = "auto"
    workers: int = 4
    include: list[Path] = field(default_factory=list)
    progress: bool = True
    ci_resamples: int = 0   # bootstrap intervals of the headline metrics when > 0
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)   # --task-arg
    max_pixels: int = DEFAULT_MAX_PIXELS     # larger images are counted image errors


@dataclass
class TaskOutcome:
    task: str
    metrics: dict[str, Any] | None = None
    skipped: str | None = None


@dataclass
class RunResult:
    run_dir: Path
    leaderboard: Path
    outcomes: list[TaskOutcome]

    @property
    def ran(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.metrics is not None]


def expand_tasks(names: list[str]) -> list[str]:
    """`all` means every registered task that takes part in full runs (demos excluded)."""
    load_plugins()
    out: list[str] = []
    for name in names:
        chosen = [t for t, cls in sorted(TASKS.items()) if cls.in_all] if name == "all" else [name]
        out += [t for t in chosen if t not in out]
    return out


def run_id(model: str, settings: dict[str, Any], split: str | None, limit: int | None,
           shard: tuple[int, int] | None, task_options: dict[str, dict[str, Any]] | None = None
           ) -> str:
    """Derived from everything that changes a sample's prediction or the sample set, so the same
    command finds its own folder and a changed setting makes a new one. Tasks are not part of
    it: adding a task to a run reuses its predictions for the others."""
    fields = {"model": model, "settings": settings, "split": split, "limit": limit,
              "shard": list(shard) if shard else None}
    if task_options:   # absent when none are set, so earlier run ids stay valid
        fields["task_options"] = task_options
    key = json.dumps(fields, sort_keys=True, default=str)
    slug = model.replace(":", "-").replace("/", "-")
    suffix = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}{suffix}"


def select(samples: list[Sample], config: RunConfig) -> list[Sample]:
    """The shard's part (a stable hash of the sample id), then the first `limit`."""
    if config.shard:
        index, count = config.shard
        samples = [s for s in samples if mf.stable_hash(f"{s.task}/{s.id}") % count == index]
    return samples[:config.limit] if config.limit is not None else samples


# ------------------------------------------------------------------------ predictions file

class PredictionLog:
    """predictions.jsonl: one line per finished sample, flushed per batch. Opening it drops a
    torn last line (a kill mid-write) so that resume starts from whole records."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        if path.exists():
            self._read()
        self._file = path.open("a", encoding="utf-8")

    def _read(self) -> None:
        data = self.path.read_bytes()
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                break
            self.rows[(row["task"], row["sample_id"])] = row
            good_end += len(line)
        if good_end < len(data):
            with self.path.open("r+b") as f:
                f.truncate(good_end)

    def done(self, task: str) -> set[str]:
        # a model error may be transient (a dropped connection, an OOM): it is tried again
        return {sid for (t, sid), row in self.rows.items()
                if t == task and row["status"] != "model_error"}

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows (a prediction's JSON plus its sample's `truth`) and flush."""
        for row in rows:
            self.rows[(row["task"], row["sample_id"])] = row
            self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def predictions(self, task: str) -> dict[str, Prediction]:
        return {sid: Prediction.from_json(row) for (t, sid), row in self.rows.items() if t == task}

    def close(self) -> None:
        self._file.close()


def truth_of(sample: Sample) -> dict[str, Any]:
    """Ground truth stored beside each prediction, so a run folder alone can be reported on."""
    fields = {"mos": sample.mos, "mos_norm": sample.mos_norm, "distortion_class":
              sample.distortion_class, "severity": sample.severity, "choice": sample.choice,
              "group": sample.group}
    return {k: v for k, v in fields.items() if v is not None}


# ------------------------------------------------------------------------ progress display

class RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} samples/s" if speed else "… samples/s", style="cyan")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), RateColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=False)


# ------------------------------------------------------------------------ the run

def prepare_task(task: Task, config: RunConfig, model: Model) -> TaskData | str:
    """Load a task's samples, or say in one line why it is skipped."""
    if task.prompt_kind not in model.kinds:
        return f"model {config.model} does not answer {task.prompt_kind} questions"
    split = config.split or task.default_split
    if split not in task.splits:
        return f"no split {split!r} (has: {', '.join(task.splits)})"
    try:
        folder = task.locate(config.data_root, config.data_paths.get(task.name))
        data = load_split(task, folder, split)
    except DataError as exc:
        return str(exc)
    if not data.samples:
        return f"no samples in split {split!r} of {folder}"
    return data


def load_split(task: Task, folder: Path, split: str) -> TaskData:
    """`task.load`, with the facts a plugin's loader may leave out taken from its declaration
    (the split, its expected count, the ground-truth direction, the options)."""
    data = task.load(folder, split)
    data.split = data.split or split
    if data.lower_better is None:
        data.lower_better = task.lower_better
    if data.expected_count is None:
        data.expected_count = task.expected_count.get(split)
    if not data.split_source:
        data.split_source = data.source
    data.options = data.options or task.option_values()
    return data


def run_task(task: Task, data: TaskData, model: Model, log: PredictionLog, config: RunConfig,
             progress: Progress) -> dict[str, Any]:
    samples = select(data.samples, config)
    done = log.done(task.name)
    todo = [s for s in samples if s.id not in done]
    bar = progress.add_task(f"{task.name:<18}", total=len(samples), completed=len(samples) - len(todo))
    by_id = {s.id: s for s in todo}
    for batch in prefetch_batches(todo, config.batch_size, decode=model.needs_images,
                                  workers=config.workers, max_pixels=config.max_pixels):
        failed = [Prediction.failure(by_id[sid], "image_error", err)
                  for sid, err in batch.errors.items()]
        predicted: list[Prediction] = []
        if batch.samples:
            try:
                predicted = model.predict(batch.samples, batch.images)
                if len(predicted) != len(batch.samples):
                    raise ModelError(f"returned {len(predicted)} predictions for "
                                     f"{len(batch.samples)} samples")
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # one bad batch costs its samples, counted, not the run
                message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                predicted = [Prediction.failure(s, "model_error", message) for s in batch.samples]
        log.write([p.to_json() | {"truth": truth_of(by_id[p.sample_id])}
                   for p in failed + predicted])
        progress.advance(bar, len(failed) + len(predicted))
    predictions = log.predictions(task.name)
    metrics = task.evaluate(samples, predictions, model.convention(), data.lower_better)
    if config.ci_resamples:
        intervals = task_intervals(task, samples, predictions, model.convention(),
                                   data.lower_better, resamples=config.ci_resamples,
                                   seed=config.seed)
        metrics["ci"] = {name: interval.to_json() for name, interval in intervals.items()}
    return {"task": task.name, "kind": task.kind, "split": data.split, "source": data.source,
            "split_source": data.split_source, "notes": data.notes, "problems": data.problems(),
            "n_available": len(data.samples), "expected_count": data.expected_count, **metrics}


def run(config: RunConfig, console: Console | None = None) -> RunResult:
    """Run one model over the configured tasks; raises ModelError/RegistryError on setup
    problems, records per-sample problems in the predictions and metrics."""
    console = console or Console(stderr=True)
    for path in config.include:
        include(path)
    task_names = expand_tasks(config.tasks)
    unknown = sorted(set(config.task_options) - set(task_names))
    if unknown:
        raise RegistryError(f"--task-arg for {', '.join(unknown)}, which this run does not "
                            f"include (tasks: {', '.join(task_names)})")
    tasks = [get_task(name, config.task_options.get(name)) for name in task_names]
    model = create_model(config.model, ModelConfig(
        model_path=config.model_path, device=config.device, batch_size=config.batch_size,
        seed=config.seed, options=config.model_options, workers=config.workers))
    run_dir = config.output_dir / (config.run_name or run_id(
        config.model, model.settings(), config.split, config.limit, config.shard,
        config.task_options))
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path, metrics_path = run_dir / "manifest.json", run_dir / "metrics.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    all_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    manifest = {
        "run_id": run_dir.name, "model": config.model, "model_settings": model.settings(),
        "model_convention": asdict(model.convention()), "model_fingerprint": model.fingerprint(),
        "config": {k: v for k, v in asdict(config).items() if k != "progress"},
        "versions": mf.package_versions(), "git_commit": mf.git_commit(),
        "started": old.get("started", dt.datetime.now(dt.timezone.utc).isoformat()),
        "tasks": old.get("tasks", {}),
    }
    outcomes: list[TaskOutcome] = []
    log = PredictionLog(run_dir / "predictions.jsonl")
    try:
        with _progress(console, config.progress) as progress:
            for task in tasks:
                data = prepare_task(task, config, model)
                if isinstance(data, str):
                    outcomes.append(TaskOutcome(task.name, skipped=data))
                    continue
                fingerprint = mf.fingerprint_samples(data.samples)
                before = manifest["tasks"].get(task.name, {}).get("data_fingerprint")
                if before not in (None, fingerprint):
                    outcomes.append(TaskOutcome(task.name, skipped=(
                        f"its data changed since {run_dir} was started (samples or ground truth "
                        "differ): finished predictions would not match; use --run-name or --output "
                        "for a new run")))
                    continue
                manifest["tasks"][task.name] = {
                    "kind": task.kind, **data.describe(),
                    "n_selected": len(select(data.samples, config)),
                    "data_fingerprint": fingerprint}
                mf.write_json(manifest_path, manifest)
                started = time.perf_counter()
                metrics = run_task(task, data, model, log, config, progress)
                metrics["wall_s"] = round(time.perf_counter() - started, 3)
                all_metrics[task.name] = metrics
                mf.write_json(metrics_path, all_metrics)
                outcomes.append(TaskOutcome(task.name, metrics=metrics))
    finally:
        log.close()
        model.close()
    manifest["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    mf.write_json(manifest_path, manifest)
    leaderboard = config.output_dir / "leaderboard.csv"
    if any(o.metrics for o in outcomes):
        update_leaderboard(leaderboard, run_dir.name, config.model,
                           [o.metrics for o in outcomes if o.metrics])
    return RunResult(run_dir, leaderboard, outcomes)


# ------------------------------------------------------------------------ merging shards

def samples_from_log(log: PredictionLog, task: str, kind: str) -> list[Sample]:
    """Rebuild a task's samples from the ground truth stored beside each prediction."""
    return [Sample(id=sid, task=task, kind=kind, images=(), **row.get("truth", {}))
            for (t, sid), row in sorted(log.rows.items()) if t == task]


def merge(run_dirs: list[Path], output_dir: Path) -> RunResult:
    """Combine the shards of one run (same model and settings, `--shard i/n` each) into the
    folder an unsharded run would have made, and score it."""
    manifests = []
    for run_dir in run_dirs:
        path = run_dir / "manifest.json"
        if not path.exists():
            raise DataError(f"merge: {run_dir} is not a run folder (no manifest.json)")
        manifests.append(json.loads(path.read_text()))
    first = manifests[0]
    for other, run_dir in zip(manifests[1:], run_dirs[1:]):
        if (other["model"], other["model_settings"]) != (first["model"], first["model_settings"]):
            raise DataError(f"merge: {run_dir} ran another model or other settings than {run_dirs[0]}")
    shards = {tuple(m["config"]["shard"]) for m in manifests if m["config"].get("shard")}
    counts = {count for _, count in shards}
    if len(counts) != 1 or len(shards) != len(manifests) or len(shards) != counts.pop():
        raise DataError(f"merge: expected every shard 0..n-1 of one split once, got {sorted(shards)}")
    config = first["config"]
    target = output_dir / run_id(first["model"], first["model_settings"], config["split"],
                                 config["limit"], None)
    target.mkdir(parents=True, exist_ok=True)
    merged = PredictionLog(target / "predictions.jsonl")
    tasks: dict[str, dict[str, Any]] = {}
    for run_dir, m in zip(run_dirs, manifests):
        rows = PredictionLog(run_dir / "predictions.jsonl")
        rows.close()
        merged.write([r for key, r in rows.rows.items() if key not in merged.rows])
        for name, info in m["tasks"].items():
            entry = tasks.setdefault(name, dict(info, n_selected=0))
            entry["n_selected"] += info.get("n_selected", 0)
    merged.close()
    convention = ModelConvention(first["model_convention"]["lower_better"],
                                 tuple(first["model_convention"]["score_range"] or ()) or None)
    outcomes, all_metrics = [], {}
    for name, info in tasks.items():
        samples = samples_from_log(merged, name, info["kind"])
        metrics = get_task(name).evaluate(samples, merged.predictions(name), convention,
                                          bool(info.get("lower_better", False)))
        metrics = {"task": name, "kind": info["kind"], "split": info["split"],
                   "source": info["source"], "notes": [], "n_available": info["n"], **metrics}
        if len(samples) < info["n_selected"]:
            metrics["notes"].append(f"{info['n_selected'] - len(samples)} samples of the shards "
                                    "have no prediction (a shard did not finish)")
        all_metrics[name] = metrics
        outcomes.append(TaskOutcome(name, metrics=metrics))
    mf.write_json(target / "metrics.json", all_metrics)
    mf.write_json(target / "manifest.json", first | {
        "run_id": target.name, "config": config | {"shard": None}, "tasks": tasks,
        "merged_from": [str(d) for d in run_dirs]})
    leaderboard = output_dir / "leaderboard.csv"
    update_leaderboard(leaderboard, target.name, first["model"], list(all_metrics.values()))
    return RunResult(target, leaderboard, outcomes)
