"""`qbench score`: score image files, folders and list files with any model that answers score
questions; no ground truth needed. One row per image: its score, status and error, and the
model's text (a VLM's answer with its reasoning), written as CSV, Parquet or JSONL.

    scores.csv                output, rewritten atomically from the log when a command ends
    scores.csv.qbench/        its work folder, a qbench.results.folder folder:
      manifest.json             the model and settings that wrote the log (others are refused)
      predictions.jsonl         one record per image, flushed per batch: what a rerun resumes from
                                (with the file's size and mtime when scored: a changed file is
                                scored again)
      .lock, errors.log, predictions.rejected.jsonl   as in a run folder

Images go through the run's machinery: batches decoded ahead in the prefetch pool
(qbench.data.images), `predict_batch` and `FailureBudget` for model errors, `select` for `--shard`.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import pandas as pd
from rich.console import Console

from qbench.core import provenance as mf
from qbench.core.files import locked, now, write_atomically
from qbench.core.model import Model, ModelConfig, ModelError
from qbench.core.options import option
from qbench.core.records import Prediction, Sample
from qbench.core.registry import create_model, include, model_class
from qbench.core.task import DataError
from qbench.data.images import file_kind
from qbench.results.folder import LOCK, Manifest, PredictionLog, RunFolder
from qbench.run.distributed import Ranks, launched, on_main
from qbench.run.loop import FailureBudget, failure_reason, lost_counts, predict_all, progress_bars
from qbench.run.runner import RunConfig, part, select

TASK = "images"   # every sample's task: what the shard hash and precomputed's `task` column see
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff",
                  ".webp")
LIST_SUFFIXES = (".txt", ".lst", ".list")
WORK_SUFFIX = ".qbench"
COLUMNS = {"image": "string", "score": "float64", "status": "string", "error": "string",
           "text": "string", "latency_s": "float64"}


def shared(name: str, **flag_changes: Any) -> Any:
    """RunConfig's field `name`, for another verb's config: the same flag, parser and default
    (declared once, in RunConfig); `flag_changes` only reword its help for that verb."""
    source = next(f for f in dataclasses.fields(RunConfig) if f.name == name)
    meta = {"flag": dataclasses.replace(source.metadata["flag"], **flag_changes)}
    if source.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=source.default_factory, metadata=meta)
    return dataclasses.field(default=source.default, metadata=meta)


@dataclass
class ScoreConfig:
    """What `qbench score` does. Each field but `paths` (the positional PATHs) is its option;
    those it shares with `qbench run` are RunConfig's fields and parse exactly as there."""

    paths: list[Path] = field(default_factory=list)
    output: Path = option(Path("scores.csv"), flag="--output", parse=Path, metavar="FILE",
                          help="a .csv, .parquet or .jsonl file (with --shard i/n, its name gets "
                               "-shard<i>of<n>); its log stays beside it in FILE.qbench/")
    model: str = shared("model")
    model_path: Path | None = shared("model_path")
    model_options: dict[str, Any] = shared("model_options")
    batch_size: int = shared("batch_size")
    workers: int = shared("workers")
    device: str = shared("device")
    seed: int = shared("seed")
    shard: tuple[int, int] | None = shared(
        "shard", help="this process's part of the images (a stable hash of each path, as in run)")
    limit: int | None = shared("limit", help="the first N images (of this shard)")
    max_pixels: int = shared("max_pixels")
    max_failure_rate: float = shared(
        "max_failure_rate", help="share of the images that may be model errors before the "
                                 "command stops and exits 1")
    include: list[Path] = shared("include")
    progress: bool = shared("progress")
    wait: bool = shared("wait", help="if another command is writing the same output, wait for "
                                     "it instead of refusing")


@dataclass
class ScoreResult:
    output: Path
    model: str
    images: int                 # images of this command (after --shard and --limit)
    statuses: Counter[str]      # status -> images, over the output's rows
    first_errors: dict[str, str]   # status -> the first image's error
    resumed: int                # images whose row an earlier command wrote
    lower_better: bool
    score_range: tuple[float, float] | None
    failure: str | None = None  # why the command failed, or None
    notes: list[str] = field(default_factory=list)
    main: bool = True           # rank 0 of a launcher (or the only process): the one that reports

    @property
    def scored(self) -> int:
        return self.statuses.get("ok", 0)

    @property
    def lost(self) -> int:
        """Images that got no answer from the model (image or model errors)."""
        return sum(lost_counts(self.statuses).values())

    @property
    def exit_code(self) -> int:
        """1: failed (past --max-failure-rate, or no usable score); 3: some images got no
        answer from the model; 0: every image was scored (or answered unreadably)."""
        return 1 if self.failure else 3 if self.lost else 0


# ------------------------------------------------------------------------------ the images

@dataclass
class ImageList:
    paths: list[str]            # absolute, each once, in the order found
    notes: list[str] = field(default_factory=list)


def find_images(inputs: Sequence[Path]) -> ImageList:
    """The images of PATH arguments: an image file; a folder, searched recursively; a list file
    (.txt, .lst, .list). A missing path, one that is not a regular file or folder (a FIFO, a
    device), a folder without images or an empty list is a DataError. Listed images are not
    opened here: a missing or corrupt one, or a FIFO under an image's name in a folder, is a
    counted image error."""
    if not inputs:
        raise DataError("qbench score: give the images, folders or list files to score")
    found: list[str] = []
    others: list[str] = []
    unreadable: list[str] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            images = images_in_folder(path, others, unreadable)
            if not images:
                raise DataError(f"no images in {path} (searched its sub-folders for "
                                f"{', '.join(IMAGE_SUFFIXES)})")
            found += images
        elif path.is_file():
            found += (images_in_list(path) if path.suffix.lower() in LIST_SUFFIXES
                      else [os.path.abspath(path)])
        elif path.exists():   # never opened: reading a FIFO would wait for a writer
            raise DataError(f"{path} is {file_kind(path.stat().st_mode)}, not an image, folder "
                            "or list file")
        else:
            raise DataError(f"no such image, folder or list file: {path}")
    unique = list(dict.fromkeys(found))
    notes = []
    if len(unique) < len(found):
        notes.append(f"{len(found) - len(unique)} image paths were given more than once; each "
                     "image is scored once")
    if others:
        notes.append(f"{len(others)} file(s) in the folders are not images by their suffix, "
                     f"left out (e.g. {others[0]})")
    if unreadable:
        notes.append(f"{len(unreadable)} sub-folder(s) could not be read, left out (e.g. "
                     f"{unreadable[0]})")
    return ImageList(unique, notes)


def images_in_folder(folder: Path, others: list[str], unreadable: list[str]) -> list[str]:
    """Every image under `folder` (by suffix, any case) in sorted order, sub-folders after the
    folder's own files; hidden files and folders (.name) are left out. Files that are not
    images and folders that cannot be read are appended to `others` and `unreadable`."""
    images: list[str] = []

    def refused(exc: OSError) -> None:
        unreadable.append(f"{exc.filename}: {exc.strerror}")

    for root, dirs, files in os.walk(os.path.abspath(folder), onerror=refused):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            (images if name.lower().endswith(IMAGE_SUFFIXES) else others).append(
                os.path.join(root, name))
    return images


def images_in_list(listing: Path) -> list[str]:
    """A list file's image paths, one per line (blank lines and # comments skipped); a relative
    path is relative to the list file's folder."""
    try:
        lines = listing.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{listing}: not a UTF-8 text file of image paths, one per line") from None
    base = os.path.dirname(os.path.abspath(listing))
    paths = [os.path.abspath(os.path.join(base, os.path.expanduser(line.strip())))
             for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise DataError(f"{listing} lists no images (one path per line)")
    return paths


def samples_of(paths: Sequence[str]) -> list[Sample]:
    """A score question per image; its id is the absolute path (what resume and shards key on)."""
    return [Sample(id=path, task=TASK, kind="score", images=(path,)) for path in paths]


def this_shard(samples: list[Sample], config: ScoreConfig) -> list[Sample]:
    """The images this process scores: `--shard i/n` by the run's partition (a stable hash of
    the task and sample id, qbench.run.runner.select), then the first `--limit`. The one place that
    splits the work: several processes (or torch.distributed ranks, as shard rank/world size)
    that call it with their own shard cover every image exactly once."""
    return select(samples, RunConfig(shard=config.shard, limit=config.limit))


# ------------------------------------------------------------------------------ the output

def output_path(config: ScoreConfig) -> Path:
    """--output, with -shard<i>of<n> before its suffix when sharded (as run folders are named),
    so the shards of one command never write one file."""
    output = Path(config.output).expanduser()
    if config.shard:
        index, count = config.shard
        output = output.with_name(f"{output.stem}-shard{index}of{count}{output.suffix}")
    return output


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    frame_of(rows).to_csv(path, index=False)


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    frame_of(rows).to_parquet(path, index=False)


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")


WRITERS: dict[str, Callable[[list[dict[str, Any]], Path], None]] = {
    ".csv": write_csv, ".parquet": write_parquet, ".jsonl": write_jsonl}


def writer_for(output: Path) -> Callable[[list[dict[str, Any]], Path], None]:
    """The writer of the output's format, checked before any image is scored."""
    suffix = output.suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"--output {output}: unknown format {suffix or '(no suffix)'}; name a "
                         f".csv, .parquet or .jsonl file")
    if suffix == ".parquet" and not any(importlib.util.find_spec(engine)
                                        for engine in ("pyarrow", "fastparquet")):
        raise ValueError(f"--output {output}: writing Parquet needs pyarrow (pip install pyarrow)")
    return WRITERS[suffix]


def work_folder(output: Path) -> RunFolder:
    """The output's work folder, made if new. An existing output that has none is not ours: it
    is never overwritten."""
    folder = RunFolder(output.with_name(output.name + WORK_SUFFIX))
    if output.is_dir():
        raise DataError(f"--output {output} is a folder: name a .csv, .parquet or .jsonl file")
    if output.exists() and not folder.path.is_dir():
        raise DataError(f"{output} exists and was not written by qbench score (there is no "
                        f"{folder.path.name} beside it): choose another --output or remove it")
    folder.path.mkdir(parents=True, exist_ok=True)
    return folder


def output_rows(samples: Sequence[Sample], log_rows: dict[tuple[str, str], dict[str, Any]],
                unscored: str) -> list[dict[str, Any]]:
    """One row per image in the order given; an image without a record (the command stopped
    before it) is `missing`, with `unscored` as its error."""
    answer_columns = [c for c in COLUMNS if c != "image"]
    rows = []
    for sample in samples:
        record = log_rows.get((TASK, sample.id)) or Prediction.failure(
            sample, "missing", unscored).to_json()
        rows.append({"image": sample.images[0]} | {c: record.get(c) for c in answer_columns})
    return rows


# ------------------------------------------------------------------------------ scoring

def refuse_unless_scores(model: str, kinds: frozenset[str] | None) -> None:
    if kinds is not None and "score" not in kinds:
        raise ModelError(f"model {model} does not answer score questions (it answers "
                         f"{', '.join(sorted(kinds)) or 'none'}); qbench score needs one that does")


def score_images(config: ScoreConfig, console: Console | None = None) -> ScoreResult:
    """Score the images of `config.paths` into `config.output` (see the module's docstring).
    Setup problems raise DataError, ModelError or ValueError (one line each); per-image
    problems are rows with their status and error. Under a launcher (torchrun, accelerate
    launch) every rank calls this: each scores its part, rank 0 writes the output."""
    with launched() as ranks:
        return score_ranks(config, console or Console(stderr=True), ranks)


def score_ranks(config: ScoreConfig, console: Console, ranks: Ranks) -> ScoreResult:
    output = output_path(config)
    write = writer_for(output)
    if not 0 <= config.max_failure_rate <= 1:
        raise ValueError(f"--max-failure-rate must be between 0 and 1, got "
                         f"{config.max_failure_rate}")
    if ranks.parallel and config.shard:
        raise ValueError("--shard under a launcher: its ranks already split the images; launch "
                         "one command, or shard without the launcher")
    for path in config.include:
        include(path)
    found = find_images(config.paths)
    samples = this_shard(samples_of(found.paths), config)
    refuse_unless_scores(config.model, getattr(model_class(config.model), "kinds", None))
    folder = work_folder(output)
    with on_main(ranks, locked(folder.file(LOCK), f"output {output}", wait=config.wait)):
        model = create_model(config.model, ModelConfig(
            model_path=config.model_path, device=ranks.device(config.device),
            batch_size=config.batch_size, seed=config.seed, options=config.model_options,
            workers=config.workers))
        try:
            refuse_unless_scores(config.model, model.kinds)
            result = score_locked(samples, model, config, folder, output, write, console, ranks)
        finally:
            model.close()
    if config.shard and not samples:
        result.notes.append(f"shard {config.shard[0]}/{config.shard[1]} holds none of the "
                            f"{len(found.paths)} images")
    result.notes[:0] = found.notes
    return dataclasses.replace(result, main=ranks.main)


def manifest_for(folder: RunFolder, config: ScoreConfig, model: Model, output: Path) -> Manifest:
    """The work folder's manifest; DataError when its log holds another model's scores."""
    old = folder.manifest() if folder.exists else None
    settings = json.loads(json.dumps(model.settings(), default=str))   # as stored
    if old is not None and (old.model, old.model_settings) != (config.model, settings):
        raise DataError(f"{output} was started by {old.model} with other settings "
                        f"({old.model_settings}); its log in {folder.path} would mix two models: "
                        "choose another --output, or remove both to start over")
    return Manifest(
        run_id=output.name, model=config.model, model_settings=settings,
        model_convention=asdict(model.convention()),
        config={k: v for k, v in asdict(config).items() if k not in ("progress", "wait")},
        model_fingerprint=model.fingerprint(), versions=mf.package_versions(),
        git_commit=mf.git_commit(), started=old.started if old else now())


class FileState(TypedDict):
    size: int
    mtime_ns: int


def file_state(path: str) -> FileState | None:
    """What a record remembers of the image it scored (None: it could not be read)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def scored_before(log: PredictionLog, samples: Sequence[Sample],
                  state: Callable[[str], FileState | None]) -> tuple[set[str], int]:
    """Images a rerun skips, and how many it scores again because their file changed since its
    record was written (size or modification time; records of a log written before qbench
    kept them count as unchanged). Image errors (a file fixed or synced since costs one decode
    to try again) and transient model errors (as a run retries them) are never skipped."""
    done = {sid for sid in log.done(TASK) if log.rows[(TASK, sid)]["status"] != "image_error"}
    changed = {s.id for s in samples if s.id in done
               and log.rows[(TASK, s.id)].get("file", state(s.images[0])) != state(s.images[0])}
    return done - changed, len(changed)


def score_locked(samples: list[Sample], model: Model, config: ScoreConfig, folder: RunFolder,
                 output: Path, write: Callable[[list[dict[str, Any]], Path], None],
                 console: Console, ranks: Ranks) -> ScoreResult:
    def start() -> tuple[Manifest, list[str]]:
        manifest = manifest_for(folder, config, model, output)
        folder.write_manifest(manifest)
        with folder.open_log() as gathered:   # a dead launcher run's rank logs, folded first
            return manifest, folder.fold_rank_logs(gathered, remove=True) + gathered.notes
    manifest, opened = ranks.main_does(start)
    log = folder.open_log() if ranks.main else folder.rank_log(ranks.rank)
    mine = part(samples, ranks.rank, ranks.world)
    budget = FailureBudget(len(mine), config.max_failure_rate)
    states: dict[str, FileState | None] = {}

    def state(path: str) -> FileState | None:
        if path not in states:
            states[path] = file_state(path)
        return states[path]
    try:
        # every rank's log knows rank 0's records
        done, changed = scored_before(log, samples, state)
        if changed and ranks.main:
            opened.append(f"{changed} image(s) changed since they were scored (file size or "
                          "modification time): scored again")
        resumed = sum(1 for s in samples if s.id in done)
        todo = [s for s in mine if s.id not in done]
        for sample in todo:   # taken before decoding: a file changed later is scored again
            state(sample.images[0])
        with progress_bars(console, config.progress and ranks.main) as progress:
            bar = progress.add_task(f"{'images':<18}", total=len(mine),
                                    completed=len(mine) - len(todo))
            predict_all(todo, model, log, folder, label=TASK, budget=budget,
                        batch_size=config.batch_size, workers=config.workers,
                        max_pixels=config.max_pixels,
                        annotate=lambda sample: {"file": state(sample.images[0])},
                        advance=lambda n: progress.advance(bar, n))
    finally:
        log.close()
    ranks.barrier()   # every rank's log is written and closed
    stopped = budget.reason() if budget.exceeded else None
    return ranks.main_does(lambda: finish(samples, model, config, folder, output, write,
                                          manifest, resumed, stopped, opened))


def finish(samples: list[Sample], model: Model, config: ScoreConfig, folder: RunFolder,
           output: Path, write: Callable[[list[dict[str, Any]], Path], None],
           manifest: Manifest, resumed: int, stopped: str | None, notes: list[str]
           ) -> ScoreResult:
    """Rank 0: every rank's records gathered, the output written, the result summarised."""
    with folder.open_log() as log:
        folder.fold_rank_logs(log, remove=True)
    rows = output_rows(samples, log.rows, "not scored: the command stopped early, after more "
                       "model errors than --max-failure-rate allows")
    write_atomically(output, lambda tmp: write(rows, tmp))
    manifest.finished = now()
    folder.write_manifest(manifest)
    statuses = Counter(row["status"] for row in rows)
    done = log.done(TASK)   # leaves out the model errors a rerun tries again
    retried = sum(1 for s in samples if s.id not in done
                  and log.rows.get((TASK, s.id), {}).get("status") == "model_error")
    notes = notes + log.notes + ([f"{retried} images have no score after a model error that "
                                  "may not recur: run the same command again to retry them"]
                                 if retried else [])
    convention = model.convention()
    return ScoreResult(
        output=output, model=config.model, images=len(samples), statuses=statuses,
        first_errors=first_errors(rows), resumed=resumed,
        lower_better=convention.lower_better, score_range=convention.score_range,
        failure=failure_reason(stopped, statuses, statuses.get("ok", 0), len(samples),
                               config.max_failure_rate, "image"),
        notes=notes)


def first_errors(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Per failed status, the first row's error (naming its image)."""
    out: dict[str, str] = {}
    for row in rows:
        if row["status"] != "ok" and row["status"] not in out:
            error = str(row["error"])
            out[row["status"]] = error if row["image"] in error else f"{row['image']}: {error}"
    return out


# ------------------------------------------------------------------------------ the verb





