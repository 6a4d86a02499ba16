"""The runner: task loads samples → model predicts batches → predictions stream to JSONL →
metrics aggregate → results are written (qbench.results.folder). Re-running the same command
resumes.

A run that cannot be trusted does not pass: a task whose model failed on more than
`max_failure_rate` of its samples (or on all of them) is marked failed, stops early, keeps no
leaderboard row and makes the command exit non-zero; the first traceback of each model failure
goes to the run folder's errors.log.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.progress import Progress

from qbench.core import provenance as mf
from qbench.core.files import now
from qbench.core.model import Model, ModelConfig
from qbench.core.options import (
    fraction,
    model_args,
    names,
    option,
    paths,
    positive,
    task_args,
    task_paths,
)
from qbench.core.options import shard as shard_of
from qbench.core.records import Sample
from qbench.core.registry import RegistryError, create_model, get_task, include, task_names
from qbench.core.task import DataError, SplitFacts, Task, TaskData
from qbench.data.images import DEFAULT_MAX_PIXELS
from qbench.results.folder import (
    SCHEMA_VERSION,
    Manifest,
    PredictionLog,
    RunFolder,
    RunFolderError,
    RunView,
    TaskFacts,
    TaskMetrics,
    records_digest,
    task_facts,
    truth_of,
)
from qbench.results.leaderboard import LEADERBOARD, rebuild_leaderboard
from qbench.run.distributed import Ranks, launched, on_main
from qbench.run.loop import FailureBudget, failure_reason, lost_problem, predict_all, progress_bars
from qbench.scoring.metrics import Conventions, Scored, evaluate, intervals

DEFAULT_MAX_FAILURE_RATE = 0.05


@dataclass
class RunConfig:
    """Everything that defines a run; each field is also its `qbench run` option
    (qbench.core.options), so an option is declared here and nowhere else."""

    model: str = option("stats", flag="--model", help="model name (qbench list shows them)")
    tasks: list[str] = option(flag="--tasks", parse=names, metavar="T1,T2",
                              factory=lambda: ["demo-degradation", "demo-score"],
                              help="comma-separated task names, 'all', or task YAML files")
    model_path: Path | None = option(None, flag="--model-path", parse=Path, metavar="PATH",
                                     help="weights folder or predictions file")
    model_options: dict[str, Any] = option(flag="--model-arg", repeated=model_args,
                                           metavar="KEY=VALUE", factory=dict,
                                           help="model option (repeatable), e.g. backend=vllm")
    data_root: Path | None = option(None, flag="--data-root", parse=Path, metavar="DIR",
                                    help="folder holding one sub-folder per task (default: "
                                         "$QBENCH_DATA_ROOT or the config file)")
    data_paths: dict[str, Path] = option(flag="--data", repeated=task_paths, metavar="TASK=PATH",
                                         factory=dict, help="folder of one task, overriding "
                                                            "--data-root (repeatable)")
    split: str | None = option(None, flag="--split", help="split of every task (default: each "
                                                          "task's published test split)")
    batch_size: int = option(8, flag="--batch-size", parse=positive, metavar="N")
    limit: int | None = option(None, flag="--limit", parse=positive, metavar="N",
                               help="the first N samples of each task")
    seed: int = option(0, flag="--seed", parse=int)
    shard: tuple[int, int] | None = option(None, flag="--shard", parse=shard_of, metavar="i/n",
                                           help="this process's part of every task")
    output_dir: Path = option(Path("results"), flag="--output", parse=Path, metavar="DIR")
    run_name: str | None = option(None, flag="--run-name",
                                  help="name of the run folder (default: derived from settings)")
    device: str = option("auto", flag="--device")
    workers: int = option(4, flag="--workers", parse=int, metavar="N",
                          help="image decoding threads (and replicas of CPU-bound models)")
    include: list[Path] = option(flag="--include", repeated=paths, metavar="PATH", factory=list,
                                 help="Python or task YAML file, or folder, defining extra tasks "
                                      "and models (repeatable)")
    progress: bool = option(True, flag="--no-progress", negate=True, help="no progress bars")
    ci_resamples: int = option(0, flag="--ci", parse=int, metavar="RESAMPLES",
                               help="bootstrap 95%% intervals of the headline metrics "
                                    "(e.g. --ci 2000)")
    task_options: dict[str, dict[str, Any]] = option(
        flag="--task-arg", repeated=task_args, metavar="TASK.KEY=VALUE", factory=dict,
        help="task option (repeatable), e.g. spaq.resize_short_side=none")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, flag="--max-pixels", parse=positive,
                             metavar="N", help="larger images are counted image errors, "
                                               "never decoded")
    max_failure_rate: float = option(DEFAULT_MAX_FAILURE_RATE, flag="--max-failure-rate",
                                     parse=fraction, metavar="RATE",
                                     help="share of a task's samples that may be model errors "
                                          "before the task fails and the run exits 1")
    wait: bool = option(False, flag="--wait", help="if another command is writing the same run "
                                                   "folder, wait for it instead of refusing")
    no_fetch: bool = option(False, flag="--no-fetch",
                            help="do not fetch missing data or weights (qbench fetch; "
                                 "HF_HUB_OFFLINE=1 does the same)")


@dataclass
class TaskOutcome:
    task: str
    metrics: dict[str, Any] | None = None
    skipped: str | None = None

    @property
    def failed(self) -> bool:
        return self.metrics is not None and self.metrics.get("status") == "failed"

    @property
    def deviates(self) -> bool:
        """Measured on other samples than the published split's (or a part of it on purpose)."""
        return self.metrics is not None and self.metrics.get("status") in ("deviates", "subset")


@dataclass
class RunResult:
    run_dir: Path
    leaderboard: Path
    outcomes: list[TaskOutcome]
    notes: list[str] = field(default_factory=list)
    main: bool = True   # rank 0 of a launcher (or the only process): the one that reports
    launched: bool = False   # under torchrun / accelerate launch

    @property
    def ran(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.metrics is not None]

    @property
    def exit_code(self) -> int:
        """0: measured as published; 1: nothing ran, or a task failed; 3: finished, but what
        was measured differs from the published split (see each task's problems)."""
        if not self.ran or any(o.failed for o in self.ran):
            return 1
        return 3 if any(o.deviates for o in self.ran) else 0


def run_id(model: str, settings: dict[str, Any], split: str | None, limit: int | None,
           shard: tuple[int, int] | None, task_options: dict[str, dict[str, Any]] | None = None
           ) -> str:
    """Derived from everything that changes a sample's prediction or the sample set, so the same
    command finds its own folder and a changed setting makes a new one. Tasks are not part of
    it: adding a task to a run reuses its predictions for the others."""
    fields: dict[str, Any] = {"model": model, "settings": settings, "split": split,
                              "limit": limit, "shard": None}
    if task_options:   # absent when none are set, so earlier run ids stay valid
        fields["task_options"] = task_options
    key = json.dumps(fields, sort_keys=True, default=str)
    slug = model.replace(":", "-").replace("/", "-")
    # The shards of one command share the unsharded run's id as their stem, so that one glob
    # (results/<run>-shard*of*) finds them all and merge writes the folder the unsharded run has.
    suffix = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}{suffix}"


def part(samples: list[Sample], index: int, count: int) -> list[Sample]:
    """Part `index` of `count` (a stable hash of the sample id): the partition of shards and of
    launcher ranks alike."""
    if count == 1:
        return samples
    return [s for s in samples if mf.stable_hash(f"{s.task}/{s.id}") % count == index]


def select(samples: list[Sample], config: RunConfig) -> list[Sample]:
    """The shard's part, then the first `limit`."""
    if config.shard:
        samples = part(samples, *config.shard)
    return samples[:config.limit] if config.limit is not None else samples


def subset_of(selected: int, available: int, limit: int | None,
              shard: tuple[int, int] | None) -> str | None:
    """What a run measured when it chose a part of the split (--limit, an unmerged shard), in
    words; None when it measured every sample."""
    if selected >= available:
        return None
    chosen = [f"--shard {shard[0]}/{shard[1]}"] if shard else []
    chosen += [f"--limit {limit}"] if limit is not None else []
    how = " and ".join(chosen) or "a selection"
    merge_hint = " (qbench merge its shards for the whole split)" if shard else ""
    return f"{how}: {selected:,} of the split's {available:,} samples{merge_hint}"


# ------------------------------------------------------------------------ progress display





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
        data = task.load_split(folder, split)
    except DataError as exc:
        return str(exc)
    if not data.samples:
        return f"no samples in split {split!r} of {folder}"
    return data














def run_task(task: Task, data: TaskData, model: Model, log: PredictionLog, config: RunConfig,
             progress: Progress, folder: RunFolder, ranks: Ranks) -> TaskMetrics:
    """This rank's part of a task predicted (resuming where the log says), then, on rank 0,
    every rank's records gathered and the task scored. Every rank returns the metrics."""
    samples = select(data.samples, config)
    mine = part(samples, ranks.rank, ranks.world)
    done = log.done(task.name)
    todo = [s for s in mine if s.id not in done]
    bar = progress.add_task(f"{task.name:<18}", total=len(mine), completed=len(mine) - len(todo))
    budget = FailureBudget(len(mine), config.max_failure_rate)
    predict_all(todo, model, log, folder, label=task.name, budget=budget,
                batch_size=config.batch_size, workers=config.workers,
                max_pixels=config.max_pixels,
                annotate=lambda sample: {"truth": truth_of(sample, task.truth_meta)},
                advance=lambda n: progress.advance(bar, n))
    ranks.barrier()   # every rank's part is written

    def gather_and_score() -> TaskMetrics:
        log.notes += folder.fold_rank_logs(log, remove=False)
        scored = Scored.of(task.name, task.kind, samples, log.predictions(task.name),
                           Conventions(model.lower_better, model.convention().score_range,
                                       bool(data.lower_better)))
        stopped = budget.reason() if budget.exceeded else None
        subset = subset_of(len(samples), len(data.samples), config.limit, config.shard)
        return score_task(scored, data.describe(), config.ci_resamples, config.seed, stopped,
                          config.max_failure_rate, subset,
                          records_digest(row for (name, _), row in log.rows.items()
                                         if name == task.name))
    return ranks.main_does(gather_and_score)


def score_task(scored: Scored, facts: SplitFacts, resamples: int, seed: int,
               stopped: str | None, max_failure_rate: float, subset: str | None,
               records_sha256: str) -> TaskMetrics:
    """metrics.json's entry for a task (the one builder of TaskMetrics): every metric,
    intervals when asked, and its status: `failed` when samples were lost past the budget or
    nothing usable came back, `deviates` when the measured samples differ from the published
    split (the task's own problems, or samples that got no answer), `subset` when the run
    chose a part of the split on purpose, else `ok`."""
    metrics = evaluate(scored)
    if resamples:
        metrics["ci"] = {name: interval.to_json() for name, interval in
                         intervals(scored, resamples=resamples, seed=seed).items()}
    counts = metrics["failure_counts"]
    reason = failure_reason(stopped, counts, metrics["n_ok"], metrics["n"], max_failure_rate,
                            "sample")
    problems = list(facts["problems"])
    if (lost := lost_problem(counts, metrics["n"])) is not None:
        problems.append(lost)
    status = ("failed" if reason else "deviates" if problems else "subset" if subset else "ok")
    entry = {"task": scored.task, "kind": scored.kind.name, "status": status,
             "failure_reason": reason, "split": facts["split"], "source": facts["source"],
             "split_source": facts["split_source"], "notes": list(facts["notes"]),
             "problems": problems, "subset": subset, "n_available": facts["n"],
             "expected_count": facts["expected_count"], **metrics,
             "records_sha256": records_sha256}
    return cast(TaskMetrics, entry)


def new_manifest(run_dir: Path, config: RunConfig, model: Model, old: Manifest | None) -> Manifest:
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("progress", "wait", "no_fetch")}
    return Manifest(
        run_id=run_dir.name, model=config.model, model_settings=model.settings(),
        model_convention=asdict(model.convention()), config=settings,
        tasks=dict(old.tasks) if old else {}, model_fingerprint=model.fingerprint(),
        versions=mf.package_versions(), git_commit=mf.git_commit(),
        started=old.started if old else now())


def run(config: RunConfig, console: Console | None = None) -> RunResult:
    """Run one model over the configured tasks; raises ModelError/RegistryError/DataError on
    setup problems, records per-sample problems in the predictions and metrics. Under a
    launcher (torchrun, accelerate launch) every rank calls this; they share the work."""
    with launched() as ranks:
        return run_ranks(config, console or Console(stderr=True), ranks)


def run_ranks(config: RunConfig, console: Console, ranks: Ranks) -> RunResult:
    for path in config.include:
        include(path)
    chosen = task_names(config.tasks)
    unknown = sorted(set(config.task_options) - set(chosen))
    if unknown:
        raise RegistryError(f"--task-arg for {', '.join(unknown)}, which this run does not "
                            f"include (tasks: {', '.join(chosen)})")
    if ranks.parallel and config.shard:
        raise ValueError("--shard under a launcher: its ranks already split every task; "
                         "launch one run, or shard without the launcher")
    tasks = [get_task(name, config.task_options.get(name)) for name in chosen]
    if not 0 <= config.max_failure_rate <= 1:
        raise ValueError(f"max_failure_rate must be between 0 and 1, got {config.max_failure_rate}")
    model = create_model(config.model, ModelConfig(
        model_path=config.model_path, device=ranks.device(config.device),
        batch_size=config.batch_size, seed=config.seed, options=config.model_options,
        workers=config.workers))
    try:
        folder = RunFolder(config.output_dir / (config.run_name or run_id(
            config.model, model.settings(), config.split, config.limit, config.shard,
            config.task_options)))
        with on_main(ranks, folder.lock(wait=config.wait)):
            outcomes, notes = run_locked(folder, tasks, model, config, console, ranks)
    finally:
        model.close()
    leaderboard = config.output_dir / LEADERBOARD
    if ranks.main:
        leaderboard, board_notes = rebuild_leaderboard(config.output_dir)
        notes += board_notes
    return RunResult(folder.path, leaderboard, outcomes, notes, ranks.main, ranks.parallel)


def run_locked(folder: RunFolder, tasks: list[Task], model: Model, config: RunConfig,
               console: Console, ranks: Ranks) -> tuple[list[TaskOutcome], list[str]]:
    def start() -> tuple[Manifest, dict[str, Any], list[str]]:
        old = folder.manifest() if folder.exists else None
        manifest = new_manifest(folder.path, config, model, old)
        if old is not None:
            differ = [k for k, v in old.identity().items() if manifest.identity()[k] != v]
            if differ:
                raise DataError(f"{folder.path} holds a run of other settings: its "
                                f"{', '.join(differ)} differ; use another --run-name or --output")
        with folder.open_log() as log:   # a dead distributed run's rank logs, folded first
            notes = folder.fold_rank_logs(log, remove=True) + log.notes
        return manifest, folder.metrics(), notes

    manifest, all_metrics, notes = ranks.main_does(start)

    def admit(task: Task, data: TaskData | str) -> str | None:
        """Why rank 0 skips the task (then every rank does), else None."""
        if isinstance(data, str):
            return data
        fingerprint = mf.fingerprint_samples(data.samples)
        facts = manifest.tasks.get(task.name)
        if facts is not None and facts.get("data_fingerprint") not in (None, fingerprint):
            return (f"its data changed since {folder.path} was started (samples or ground truth "
                    "differ): finished predictions would not match; use --run-name or --output "
                    "for a new run")
        manifest.tasks[task.name] = task_facts(
            task.kind, data, task.truth_meta, len(select(data.samples, config)), fingerprint)
        folder.write_manifest(manifest)
        return None

    outcomes: list[TaskOutcome] = []
    log = folder.open_log() if ranks.main else folder.rank_log(ranks.rank)
    try:
        with progress_bars(console, config.progress and ranks.main) as progress:
            for task in tasks:
                data = prepare_task(task, config, model)
                skipped = ranks.main_does(functools.partial(admit, task, data))
                if skipped is not None:
                    outcomes.append(TaskOutcome(task.name, skipped=skipped))
                    continue
                assert not isinstance(data, str)
                started = time.perf_counter()
                metrics = run_task(task, data, model, log, config, progress, folder, ranks)
                metrics["wall_s"] = round(time.perf_counter() - started, 3)
                all_metrics[task.name] = metrics
                if ranks.main:
                    folder.write_metrics(all_metrics)
                outcomes.append(TaskOutcome(task.name, metrics=dict(metrics)))
    finally:
        log.close()
    ranks.barrier()   # every rank's log is closed: rank 0 may remove them

    def finish() -> None:
        if ranks.parallel:
            with folder.open_log() as gathered:
                folder.fold_rank_logs(gathered, remove=True)
        manifest.finished = now()
        folder.write_manifest(manifest)
        folder.write_records_cache(folder.records_digests())
    ranks.main_does(finish)
    return outcomes, notes + log.notes


# ------------------------------------------------------------------------ merging shards

def merge(run_dirs: list[Path], output_dir: Path, *, replace: bool = False) -> RunResult:
    """Combine the shards of one run (`--shard i/n` each, everything else equal) into the
    folder an unsharded run would have made, and score it: its records are exactly the shards'
    records. Refused (a DataError naming the shard or folder): shards that differ in what
    defines the run (model and settings, split, limit, seed, task options, shard count, a
    task's data), a shard missing or given twice, a shard that did not finish, a shard holding
    another shard's records, and a target folder holding a run that was not merged from these
    shards (unless `replace`)."""
    views = [RunView.load(path) for path in run_dirs]
    first = views[0]
    for view in views[1:]:
        for key, value in first.manifest.identity().items():
            if view.manifest.identity()[key] != value:
                raise DataError(f"merge: {view.path} differs from {first.path} in its {key} "
                                f"({view.manifest.identity()[key]!r} vs {value!r})")
        for task, facts in view.manifest.tasks.items():
            other = first.manifest.tasks.get(task)
            if other is not None and other.get("data_fingerprint") != facts.get("data_fingerprint"):
                raise DataError(f"merge: {view.path} and {first.path} read different data for "
                                f"task {task} (data fingerprints differ)")
    count = first.manifest.identity()["shard count"]
    if count is None:
        raise DataError(f"merge: {first.path} is not a shard (it was run without --shard)")
    by_index: dict[int, list[RunView]] = {}
    for view in views:
        by_index.setdefault(int(view.manifest.config["shard"][0]), []).append(view)
    for index in range(count):
        given = by_index.get(index, [])
        if not given:
            raise DataError(f"merge: shard {index} of {count} missing (give every shard of the "
                            f"run, e.g. {first.path.parent}/{shard_stem(first.path)}"
                            f"-shard*of{count})")
        if len(given) > 1:
            raise DataError(f"merge: shard {index} of {count} given twice: "
                            f"{' and '.join(str(v.path) for v in given)}")
    for view in views:
        check_shard(view, count)
    config = first.manifest.config
    target = RunFolder(output_dir / run_id(first.model, first.manifest.model_settings,
                                           config.get("split"), config.get("limit"), None,
                                           config.get("task_options") or None))
    with target.lock():
        if target.exists and not replace:
            sources = sorted(str(v.path.resolve()) for v in views)
            try:
                previous = target.manifest().merged_from or []
            except RunFolderError:
                previous = []
            if sorted(previous) != sources:
                raise DataError(f"merge: {target.path} holds a run that was not merged from these "
                                "shards; pass --replace to overwrite it, or --output another "
                                "folder")
        target.clear()
        return merge_locked(sorted(views, key=lambda v: v.manifest.config["shard"][0]), target,
                            output_dir)


def shard_stem(path: Path) -> str:
    return path.name.rsplit("-shard", 1)[0]


def check_shard(view: RunView, count: int) -> None:
    """A shard holds its own records only, and every task it started is finished: scored in
    its metrics.json with a record for each sample it selected. (A shard over its failure
    budget that finished is merged: the merged run's counts decide.)"""
    index = int(view.manifest.config["shard"][0])
    name = f"shard {index} of {count} ({view.path})"
    for task, sample_id in view.rows.rows:
        if mf.stable_hash(f"{task}/{sample_id}") % count != index:
            owner = mf.stable_hash(f"{task}/{sample_id}") % count
            raise DataError(f"merge: {name} holds predictions of shard {owner} ({task}/"
                            f"{sample_id}): these are not this shard's records")
    for task, facts in view.manifest.tasks.items():
        if task in view.left_out:
            raise DataError(f"merge: {name}: {view.left_out[task]}")
        done = len(view.rows.of(task))
        entry = view.metrics.get(task)
        if entry is None or done < facts["n_selected"]:
            stopped = (f" (it stopped: {entry['failure_reason']}; a higher --max-failure-rate "
                       "lets it finish)" if entry is not None and entry["failure_reason"] else "")
            raise DataError(f"merge: {name} did not finish task {task}: {done} of "
                            f"{facts['n_selected']} samples have a prediction{stopped}; run its "
                            "command again to finish it")


def merge_locked(views: list[RunView], target: RunFolder, output_dir: Path) -> RunResult:
    first = views[0]
    tasks: dict[str, TaskFacts] = {}
    with target.open_log() as log:
        for view in views:
            log.write(list(view.rows.rows.values()))
            for name, facts in view.manifest.tasks.items():
                # the shards' facts agree (merge checked their fingerprints) but their selections
                entry = tasks.setdefault(name, TaskFacts(**{**facts, "n_selected": 0}))
                entry["n_selected"] += facts["n_selected"]
    config = first.manifest.config
    manifest = Manifest(**{**asdict(first.manifest), "run_id": target.path.name,
                           "config": config | {"shard": None}, "tasks": tasks,
                           "merged_from": [str(v.path.resolve()) for v in views],
                           "schema_version": SCHEMA_VERSION, "finished": now()})
    target.write_manifest(manifest)
    merged = RunView.load(target.path)
    digests = merged.rows.digests()
    rate = config.get("max_failure_rate", DEFAULT_MAX_FAILURE_RATE)
    outcomes, all_metrics = [], {}
    for name, facts in tasks.items():
        subset = subset_of(facts["n_selected"], facts["n"], config.get("limit"), None)
        metrics = score_task(merged.scored(name), facts, int(config.get("ci_resamples") or 0),
                             int(config.get("seed") or 0), None, rate, subset, digests[name])
        all_metrics[name] = metrics
        outcomes.append(TaskOutcome(name, metrics=dict(metrics)))
    target.write_metrics(all_metrics)
    target.write_records_cache(digests)
    leaderboard, notes = rebuild_leaderboard(output_dir)
    return RunResult(target.path, leaderboard, outcomes, [*merged.notes, *notes])
