"""`qbench fetch`: benchmark data and weights from the Hugging Face Hub, as the catalog
(qbench/catalog.yaml) and the user's sources files say (qbench.data.sources), verified, unpacked
safely and recorded. `qbench run` calls `fetch_missing` for what a run needs and lacks.

Downloads go through huggingface_hub (its cache, HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN) at a
commit resolved once per repository. Every file is checked against the catalog's sha256, else
the hub's LFS sha256, else (small files kept in git) the hub's git blob id, before anything of
it is unpacked; a mismatch removes the cached copy and stops with one line. Offline, the
expected digest is the name of the cached blob (huggingface_hub names blobs by it).

A task's folder is assembled in a hidden sibling folder and renamed into place once every
file is in and its record (qbench-source.json: repo, commit, file, sha256 of each part) is
written, so a killed fetch leaves nothing that `data check` or a run takes for the data.
Archive members that would leave their folder, links and device files refuse the archive.
Weights stay in the Hugging Face cache; a verified set is stamped under $QBENCH_CACHE/fetched
and found by `qbench run` (settings.weights_path) without --model-path.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.markup import escape

from qbench.core.provenance import RECORD, RECORD_VERSION, read_record
from qbench.core.settings import cache_root, user_settings
from qbench.core.task import DataError, DataNotFound

if TYPE_CHECKING:
    from qbench.data.sources import FileSpec, ModelSource, TaskSource

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CHUNK = 1 << 20
PARTIAL = ".qbench-partial-"           # hidden sibling a task folder is assembled in
OLD = ".qbench-old-"                   # a replaced task folder, until the new one is in place
SNAPSHOT = re.compile(r"(models|datasets)--([^/]+?)--([^/]+)/snapshots/([0-9a-f]{40})(?:/(.+))?$")
HEX64, HEX40 = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9a-f]{40}")


class FetchError(DataError):
    """Data or weights that cannot be fetched as asked; one line naming the file and cause."""


# ------------------------------------------------------------------------------ the hub

@dataclass(frozen=True)
class Hub:
    """How to reach the hub, read when a command starts: HF_ENDPOINT (a mirror), the cache
    (HF_HUB_CACHE or huggingface_hub's default), HF_HUB_OFFLINE (cache only)."""

    endpoint: str | None
    cache_dir: Path
    offline: bool

    @classmethod
    def current(cls) -> Hub:
        from huggingface_hub import constants
        cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
        return cls(os.environ.get("HF_ENDPOINT") or None, Path(cache).expanduser(),
                   constants.is_offline_mode())

    def api(self) -> Any:
        from huggingface_hub import HfApi
        return HfApi(endpoint=self.endpoint)


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """huggingface_hub's and httpx2's exceptions as one-line FetchErrors naming `what`."""
    import httpx2
    from huggingface_hub import errors
    try:
        yield
    except errors.GatedRepoError:
        raise FetchError(f"{what}: the repository is gated: accept its terms on the hub and "
                         "set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise FetchError(f"{what}: repository not found (a private one needs HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise FetchError(f"{what}: revision not found in the repository") from None
    except (errors.LocalEntryNotFoundError, errors.RevisionResolutionError,
            errors.OfflineModeIsEnabled):
        raise FetchError(f"{what}: not in the Hugging Face cache, and the hub cannot be asked "
                         "(HF_HUB_OFFLINE=1 or no connection): fetch it where the hub is "
                         "reachable first") from None
    except errors.EntryNotFoundError:
        raise FetchError(f"{what}: no such file in the repository") from None
    except (errors.HfHubHTTPError, errors.FileMetadataError, httpx2.HTTPError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FetchError(f"{what}: {first}") from None


@dataclass(frozen=True)
class HubFile:
    """A file of a repository at a commit, with what the hub says it must hash to."""

    repo: str
    repo_type: str
    commit: str
    path: str
    size: int | None
    sha256: str | None      # LFS files (and offline, blobs named by their sha256)
    git_sha1: str | None    # files kept in git

    @property
    def label(self) -> str:
        return f"{self.repo}/{self.path}"


def resolve(hub: Hub, repo: str, repo_type: str, revision: str) -> str:
    """The commit `revision` means now (offline: as the cache last recorded it)."""
    with hub_errors(f"{repo} @ {revision}"):
        return str(hub.api().resolve_revision(repo, repo_type=repo_type, revision=revision,
                                              cache_dir=hub.cache_dir,
                                              local_files_only=hub.offline).resolved)


def _from_listing(repo: str, repo_type: str, commit: str, entry: Any) -> HubFile:
    return HubFile(repo, repo_type, commit, entry.path, entry.size,
                   entry.lfs.sha256 if entry.lfs else None, None if entry.lfs else entry.blob_id)


def cached(hub: Hub, repo: str, repo_type: str, commit: str, path: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo, path, cache_dir=hub.cache_dir, revision=commit,
                                   repo_type=repo_type)
    return Path(found) if isinstance(found, str) else None


def _from_cache(hub: Hub, repo: str, repo_type: str, commit: str, path: str) -> HubFile:
    """What the cache knows of a file: huggingface_hub names each blob by its ETag, the
    sha256 of an LFS file or the git blob id of a small one."""
    found = cached(hub, repo, repo_type, commit, path)
    if found is None:
        raise FetchError(f"{repo}/{path} @ {commit[:12]}: not in the Hugging Face cache "
                         f"({hub.cache_dir}) and HF_HUB_OFFLINE=1: fetch it where the hub is "
                         "reachable first")
    blob = found.resolve().name
    return HubFile(repo, repo_type, commit, path, found.stat().st_size,
                   blob if HEX64.fullmatch(blob) else None,
                   blob if HEX40.fullmatch(blob) else None)


def describe_files(hub: Hub, repo: str, repo_type: str, commit: str,
                   paths: list[str]) -> list[HubFile]:
    if hub.offline:
        return [_from_cache(hub, repo, repo_type, commit, p) for p in paths]
    with hub_errors(f"{repo} @ {commit[:12]}"):
        found = {e.path: e for e in hub.api().get_paths_info(
            repo, paths, revision=commit, repo_type=repo_type) if hasattr(e, "size")}
    missing = [p for p in paths if p not in found]
    if missing:
        raise FetchError(f"{repo} @ {commit[:12]}: no file {missing[0]} in the repository")
    return [_from_listing(repo, repo_type, commit, found[p]) for p in paths]


# ------------------------------------------------------------------------------ verifying

def digests(path: Path) -> tuple[str, str]:
    """sha256 and git blob id of a file, in one pass."""
    sha, git = hashlib.sha256(), hashlib.sha1()
    git.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            git.update(chunk)
    return sha.hexdigest(), git.hexdigest()


def discard(path: Path) -> None:
    """Remove a cached file and the blob it points to, so that the next fetch downloads it."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def verify(path: Path, file: HubFile, pinned: str | None) -> str:
    """The file's sha256, once it matches everything known about it: the catalog's sha256,
    the hub's sha256 (LFS) or git blob id, the size. A mismatch removes the cached copy."""
    sha, git = digests(path)
    expected = [("catalog sha256", pinned, sha), ("hub sha256", file.sha256, sha),
                ("hub git blob id", file.git_sha1, git)]
    known = [(what, want, got) for what, want, got in expected if want]
    if not known:
        raise FetchError(f"{file.label} @ {file.commit[:12]}: the hub gives no checksum for it; "
                         "pin one (files: [{path: …, sha256: …}]) to fetch it")
    for what, want, got in known:
        if want != got:
            discard(path)
            raise FetchError(f"{file.label} @ {file.commit[:12]}: checksum mismatch ({what} "
                             f"{want}, downloaded {got}); the copy was removed and nothing of "
                             "it was unpacked")
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        discard(path)
        raise FetchError(f"{file.label}: {size} bytes, the hub lists {file.size}; the copy was "
                         "removed")
    return sha


def download(hub: Hub, file: HubFile, console: Console) -> Path:
    """The file in the Hugging Face cache (downloaded with its progress bar unless there)."""
    from huggingface_hub import hf_hub_download
    if cached(hub, file.repo, file.repo_type, file.commit, file.path) is None:
        console.print(f"downloading {escape(file.label)} ({human(file.size)})", highlight=False)
    with hub_errors(f"{file.label} @ {file.commit[:12]}"):
        return Path(hf_hub_download(file.repo, file.path, repo_type=file.repo_type,
                                    revision=file.commit, cache_dir=hub.cache_dir,
                                    endpoint=hub.endpoint, local_files_only=hub.offline))


def human(size: int | None) -> str:
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


# ------------------------------------------------------------------------------ unpacking

def is_archive(path: str) -> bool:
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def below(path: str, root: str) -> str | None:
    """`path` without the leading folder `root` ('/'-separated), None when not under it."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    head = [p for p in root.split("/") if p]
    return "/".join(parts[len(head):]) if parts[:len(head)] == head else None


def member_target(name: str, root: str, label: str) -> str | None:
    """Where an archive member lands, relative to its folder; None to leave it out (outside
    `root`, macOS metadata); a FetchError when the name would leave the folder."""
    parts = name.split("/")
    if "\\" in name or name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
        raise FetchError(f"{label}: member {name!r} would land outside its folder; archive "
                         "refused, nothing unpacked")
    target = below(name, root)
    if not target or any(p == "__MACOSX" or p.startswith("._") for p in target.split("/")):
        return None
    return target


@dataclass
class Unpacked:
    files: int = 0
    left_out: int = 0   # members outside `root`, and macOS metadata


def _refuse(label: str, name: str, kind: str) -> FetchError:
    return FetchError(f"{label}: member {name!r} is {kind}; archive refused, nothing unpacked")


def _write(dest: Path, target: str, source: Any) -> None:
    path = dest / target
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)


def unpack_tar(archive: Path, dest: Path, root: str, label: str) -> Unpacked:
    """One streaming pass (a .tgz is decompressed once); every member is checked before it is
    written, and the caller removes `dest` when one is refused."""
    out = Unpacked()
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if member.issym() or member.islnk():
                    raise _refuse(label, member.name, "a link")
                if not (member.isreg() or member.isdir()):
                    raise _refuse(label, member.name, "a device, pipe or other special file")
                target = member_target(member.name, root, label)
                if target is None:
                    out.left_out += member.isreg()
                elif member.isdir():
                    (dest / target).mkdir(parents=True, exist_ok=True)
                else:
                    _write(dest, target, tar.extractfile(member))
                    out.files += 1
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise FetchError(f"{label}: not a readable archive: {exc}") from None
    return out


def unpack_zip(archive: Path, dest: Path, root: str, label: str) -> Unpacked:
    out = Unpacked()
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:   # checked whole before anything is written
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise _refuse(label, info.filename, "a link")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise _refuse(label, info.filename, "a device, pipe or other special file")
                member_target(info.filename, root, label)
            for info in infos:
                target = member_target(info.filename, root, label)
                if target is None:
                    out.left_out += not info.is_dir()
                elif info.is_dir():
                    (dest / target).mkdir(parents=True, exist_ok=True)
                else:
                    with zf.open(info) as source:
                        _write(dest, target, source)
                    out.files += 1
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise FetchError(f"{label}: not a readable archive: {exc}") from None
    return out


def place(path: Path, file: HubFile, source: TaskSource, staging: Path) -> dict[str, Any]:
    """Unpack an archive (its members below `root`) or copy a file (its path below `root`)
    into `staging`/`into`; what was done, for the record."""
    dest = staging / source.into
    dest.mkdir(parents=True, exist_ok=True)
    if is_archive(file.path):
        unpack = unpack_zip if file.path.lower().endswith(".zip") else unpack_tar
        done = unpack(path, dest, source.root, file.label)
        if not done.files:
            raise FetchError(f"{file.label}: no file of the archive lies under root "
                             f"{source.root!r}; check the sources entry")
        return {"unpacked_files": done.files, "left_out": done.left_out}
    target = below(file.path, source.root)
    assert target, "checked when the task was planned"
    (dest / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest / target)
    return {"copied_to": (PurePosixPath(source.into) / target).as_posix()}


# ------------------------------------------------------------------------------ task data

def _key(*fields: object) -> tuple:
    """What identifies a part of a task's data: repo, type, commit, file, into, root."""
    return fields


@dataclass
class TaskFetch:
    """A task's sources resolved to files at commits, and the folder they fill."""

    name: str
    folder: Path
    parts: list[tuple[TaskSource, FileSpec, HubFile]]

    def keys(self) -> list[tuple]:
        return [_key(f.repo, f.repo_type, f.commit, f.path, s.into, s.root)
                for s, _, f in self.parts]

    @property
    def ready(self) -> bool:
        record = read_record(self.folder)
        return record is not None and self.keys() == [
            _key(r.get("repo"), r.get("repo_type"), r.get("commit"), r.get("file"),
                 r.get("into"), r.get("root")) for r in record]

    def check_folder(self) -> None:
        """A folder qbench did not fill is never replaced."""
        if (self.folder.is_dir() and read_record(self.folder) is None
                and any(self.folder.iterdir())):
            raise FetchError(f"{self.name}: {self.folder} exists and was not filled by qbench "
                             f"fetch (no {RECORD}): move it away, or fetch elsewhere with "
                             f"--data {self.name}=DIR or --data-root")


def task_folder(name: str, sources: list[TaskSource], data_root: Path,
                override: Path | None) -> Path:
    """--data TASK=PATH, else data root / the sources' `folder`, else the task's first."""
    if override is not None:
        return override
    folders = {s.folder for s in sources if s.folder}
    if len(folders) > 1:
        raise FetchError(f"sources of task {name} name different folders: {sorted(folders)}")
    if folders:
        return data_root / folders.pop()
    from qbench.core.registry import get_task
    return get_task(name).candidates(data_root)[0]


def plan_task(hub: Hub, name: str, sources: list[TaskSource], folder: Path,
              commits: dict[tuple, str]) -> TaskFetch:
    parts = []
    for source in sources:
        for spec in source.files:
            if not is_archive(spec.path) and not below(spec.path, source.root):
                raise FetchError(f"sources of task {name}: file {spec.path} is not under root "
                                 f"{source.root!r}")
        key = (source.repo, source.repo_type, source.revision)
        if key not in commits:
            commits[key] = resolve(hub, *key)
        files = describe_files(hub, source.repo, source.repo_type, commits[key],
                               [spec.path for spec in source.files])
        parts += [(source, spec, f) for spec, f in zip(source.files, files, strict=True)]
    return TaskFetch(name, folder, parts)


def fetch_task(hub: Hub, plan: TaskFetch, console: Console) -> None:
    """Download and verify every file of the task, then assemble its folder beside it and
    rename it into place (the old one, if qbench filled it, is replaced)."""
    from qbench.core.files import locked, now, write_json
    plan.folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(plan.folder.parent / ".qbench-fetch.lock", f"fetching into {plan.folder.parent}",
                wait=True):
        if plan.ready:   # another fetch did it while this one waited
            return
        plan.check_folder()
        for stale in plan.folder.parent.glob(f".{plan.folder.name}{PARTIAL}*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in plan.folder.parent.glob(f".{plan.folder.name}{OLD}*"):
            shutil.rmtree(stale, ignore_errors=True)
        paths = [download(hub, f, console) for _, _, f in plan.parts]
        sums = []
        for (_, spec, f), path in zip(plan.parts, paths, strict=True):
            console.print(f"verifying {escape(f.label)}", highlight=False)
            sums.append(verify(path, f, spec.sha256))
        staging = plan.folder.with_name(f".{plan.folder.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
        staging.mkdir()
        try:
            entries = []
            for (source, _, f), path, sha in zip(plan.parts, paths, sums, strict=True):
                console.print(f"{'unpacking' if is_archive(f.path) else 'copying'} "
                              f"{escape(f.label)} into {escape(str(plan.folder / source.into))}",
                              highlight=False)
                entries.append({"repo": f.repo, "repo_type": f.repo_type,
                                "revision": source.revision, "commit": f.commit, "file": f.path,
                                "sha256": sha, "size": f.size, "into": source.into,
                                "root": source.root, **place(path, f, source, staging)})
            write_json(staging / RECORD, {"version": RECORD_VERSION, "task": plan.name,
                                          "fetched": now(), "sources": entries})
            install(staging, plan.folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def install(staging: Path, folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if folder.exists():
        old = folder.with_name(f".{folder.name}{OLD}{uuid.uuid4().hex[:8]}")
        folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(folder)


# ------------------------------------------------------------------------------ weights

@dataclass
class ModelFetch:
    name: str
    source: ModelSource
    commit: str
    files: list[HubFile]


def stamp_path(source: ModelSource, commit: str) -> Path:
    """Where a verified set of weights is stamped (qbench's cache, not the hub's)."""
    repo = f"{source.repo_type}s--{source.repo.replace('/', '--')}"
    name = source.subfolder.replace("/", "--") or "_"
    return cache_root() / "fetched" / repo / commit / f"{name}.json"


def read_stamp(source: ModelSource, commit: str) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(stamp_path(source, commit).read_text(encoding="utf-8"))
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, list) else None


def weights_folder(hub: Hub, source: ModelSource, commit: str,
                   files: list[dict[str, Any]]) -> Path | None:
    """The snapshot folder holding a stamped set of weights, when every file is there."""
    folder = None
    for entry in files:
        found = cached(hub, source.repo, source.repo_type, commit, entry["path"])
        if found is None or found.stat().st_size != entry["size"]:
            return None
        folder = found.parents[len(PurePosixPath(entry["path"]).parts) - 1]
    return None if folder is None else folder / source.subfolder


def plan_model(hub: Hub, name: str, source: ModelSource, commits: dict[tuple, str]) -> ModelFetch:
    key = (source.repo, source.repo_type, source.revision)
    if key not in commits:
        commits[key] = resolve(hub, *key)
    commit = commits[key]
    if hub.offline:
        stamped = read_stamp(source, commit)
        if stamped is None:
            raise FetchError(f"{name}: {source.repo} @ {commit[:12]} was never fetched and "
                             "verified here, and HF_HUB_OFFLINE=1: fetch it where the hub is "
                             "reachable first")
        files = [_from_cache(hub, source.repo, source.repo_type, commit, e["path"])
                 for e in stamped]
        return ModelFetch(name, source, commit, files)
    with hub_errors(f"{source.repo} @ {commit[:12]}"):
        listing = list(hub.api().list_repo_tree(source.repo, path_in_repo=source.subfolder or None,
                                                recursive=True, revision=commit,
                                                repo_type=source.repo_type))
    files = [_from_listing(source.repo, source.repo_type, commit, e) for e in listing
             if hasattr(e, "size") and any(fnmatch(below(e.path, source.subfolder) or "", p)
                                           for p in source.files)]
    if not files:
        raise FetchError(f"{name}: no file of {source.repo} @ {commit[:12]} under "
                         f"{source.subfolder or 'its root'!r} matches {source.files}")
    return ModelFetch(name, source, commit, files)


def fetch_model(hub: Hub, plan: ModelFetch, console: Console) -> Path:
    """Every file downloaded and verified, then stamped; the weights folder."""
    from qbench.core.files import write_json
    entries = []
    for file in plan.files:
        path = download(hub, file, console)
        entries.append({"path": file.path, "size": path.stat().st_size,
                        "sha256": verify(path, file, None)})
    stamp = stamp_path(plan.source, plan.commit)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"repo": plan.source.repo, "repo_type": plan.source.repo_type,
                       "revision": plan.source.revision, "commit": plan.commit,
                       "subfolder": plan.source.subfolder, "files": entries})
    folder = weights_folder(hub, plan.source, plan.commit, entries)
    assert folder is not None, "every file was just placed in the cache"
    return folder


def model_ready(hub: Hub, plan: ModelFetch) -> Path | None:
    stamped = read_stamp(plan.source, plan.commit)
    if stamped is None or {e["path"] for e in stamped} != {f.path for f in plan.files}:
        return None
    return weights_folder(hub, plan.source, plan.commit, stamped)


def fetched_weights(model: str) -> Path | None:
    """The verified weights of a catalog model in the Hugging Face cache, without asking the
    hub (the revision as the cache last resolved it); None when there are none."""
    from qbench.data.sources import load_catalog
    source = load_catalog().models.get(model)
    if source is None:
        return None
    hub = Hub(None, Hub.current().cache_dir, offline=True)
    try:
        commit = resolve(hub, source.repo, source.repo_type, source.revision)
    except FetchError:
        return None
    stamped = read_stamp(source, commit)
    return weights_folder(hub, source, commit, stamped) if stamped else None


def weights_source(path: Path | None) -> dict[str, str] | None:
    """Repo, commit and subfolder of weights in the Hugging Face cache (the run manifest
    records them), read off the snapshot path; None elsewhere."""
    match = SNAPSHOT.search(Path(path).as_posix()) if path is not None else None
    if match is None:
        return None
    kind, owner, name, commit, subfolder = match.groups()
    return {"repo": f"{owner}/{name}", "repo_type": kind[:-1], "commit": commit,
            "subfolder": subfolder or ""}


# ------------------------------------------------------------------------------ commands

def _state(hub: Hub, file: HubFile, ready: bool) -> str:
    if ready:
        return "ready"
    return "in cache" if cached(hub, file.repo, file.repo_type, file.commit, file.path) else \
        "download"


def show(console: Console, hub: Hub, tasks: list[TaskFetch], models: list[ModelFetch]) -> None:
    """What will be fetched, with sizes, before anything is."""
    from tabulate import tabulate
    listed = [(t.name, f, t.ready) for t in tasks for _, _, f in t.parts]
    listed += [(m.name, f, model_ready(hub, m) is not None) for m in models for f in m.files]
    rows = [[name, f"{f.repo} @ {f.commit[:12]}", f.path, human(f.size), _state(hub, f, ready)]
            for name, f, ready in listed]
    sizes = [f.size or 0 for (_, f, _), row in zip(listed, rows, strict=True)
             if row[-1] == "download"]
    console.print(tabulate(rows, headers=["for", "repository @ commit", "file", "size", "state"]),
                  highlight=False, soft_wrap=True)
    console.print(f"to download: {len(sizes)} files, {human(sum(sizes))}"
                  + (" (HF_HUB_OFFLINE=1: the cache only)" if hub.offline else ""),
                  highlight=False)


def fetch_all(console: Console, hub: Hub, tasks: list[TaskFetch],
              models: list[ModelFetch]) -> dict[str, Path]:
    """Fetch the planned tasks and weights; the weights folder of each model."""
    for task in tasks:
        if task.ready:
            console.print(f"{task.name}: ready in {escape(str(task.folder))}", highlight=False)
            continue
        fetch_task(hub, task, console)
        console.print(f"{task.name}: fetched into {escape(str(task.folder))}", highlight=False)
    folders = {}
    for model in models:
        folder = model_ready(hub, model) or fetch_model(hub, model, console)
        console.print(f"{model.name}: weights in {escape(str(folder))}", highlight=False)
        folders[model.name] = folder
    return folders




class RunInputs(Protocol):
    """What `fetch_missing` reads of a run's configuration (and fills in)."""

    tasks: list[str]
    model: str
    model_path: Path | None
    data_root: Path | None
    data_paths: dict[str, Path]


def fetch_missing(config: RunInputs, console: Console) -> dict[str, str]:
    """`qbench run`'s fetch: the tasks whose data is not found and the model's weights when
    none were given, as far as the catalog has sources, listed with sizes, then fetched.
    Off under HF_HUB_OFFLINE=1 (and --no-fetch). Returns what to download by hand for the
    tasks the catalog cannot fetch (shown with their skip lines)."""
    from qbench.core.registry import get_task, model_class, task_names
    from qbench.core.settings import user_settings
    from qbench.data.sources import load_catalog
    hub = Hub.current()
    if hub.offline:
        return {}
    catalog = load_catalog()
    settings = user_settings()
    data_root = config.data_root or settings.data_root
    missing, manual = [], {}
    for name in task_names(config.tasks):
        try:
            get_task(name).locate(data_root, config.data_paths.get(name))
        except DataNotFound:
            if name in catalog.tasks:
                missing.append(name)
            elif name in catalog.manual:
                manual[name] = catalog.manual[name]
    factory = model_class(config.model)
    folder = getattr(factory, "weights_folder", None)
    default = settings.model_root / folder if folder and settings.model_root else None
    want_model = (config.model in catalog.models and getattr(factory, "weights", None)
                  and config.model not in settings.models
                  and (config.model_path is None or (config.model_path == default
                                                     and not default.exists())))
    if not missing and not want_model:
        return manual
    wanted = missing + ([f"{config.model} weights"] if want_model else [])
    console.print(f"fetching what this run needs and lacks: {', '.join(wanted)} (--no-fetch or "
                  "HF_HUB_OFFLINE=1 to run with what is local)", highlight=False, soft_wrap=True)
    commits: dict[tuple, str] = {}
    try:
        plans = [plan_task(hub, n, catalog.tasks[n], task_folder(
            n, catalog.tasks[n], data_root, config.data_paths.get(n)), commits) for n in missing]
        for plan in plans:
            plan.check_folder()
        weights = ([plan_model(hub, config.model, catalog.models[config.model], commits)]
                   if want_model else [])
        show(console, hub, plans, weights)
        folders = fetch_all(console, hub, plans, weights)
    except FetchError as exc:
        raise FetchError(f"{exc} (--no-fetch or HF_HUB_OFFLINE=1 runs with what is local)") \
            from None
    if config.model in folders:
        config.model_path = folders[config.model]
    config.data_root = data_root
    return manual


def weights_path(model: str, weights_folder: str | None, explicit: Path | None = None
                 ) -> Path | None:
    """A model's weights: --model-path, else the config's `models` entry, else its default
    folder under the model root when it exists, else the copy `qbench fetch` verified in the
    Hugging Face cache, else the default folder (absent: the error names it)."""
    if explicit is not None:
        return explicit
    settings = user_settings()
    if model in settings.models:
        return settings.models[model]
    default = settings.model_root / weights_folder if weights_folder and settings.model_root \
        else None
    if default is not None and default.exists():
        return default
    return fetched_weights(model) or default


def model_weights(model: str, explicit: Path | None = None) -> Path | None:
    """`weights_path` of a model by its name (its default folder is its class's)."""
    from qbench.core.registry import model_class
    return weights_path(model, getattr(model_class(model), "weights_folder", None), explicit)
