"""Where qbench fetches benchmark data and weights from: the catalog shipped in the package
(qbench/catalog.yaml) and the user's sources files, which replace catalog entries of the same
name. Sources are data, not code; this module only reads and checks them.

    tasks:
      <task>:                        # a list: a task can need several repos (images + metas)
        - repo: owner/name           # a Hugging Face Hub repository
          repo_type: dataset         # dataset | model
          revision: main             # branch, tag or commit (a 40-hex commit pins it)
          files: [images.tar, metas/test.json]   # .tar/.tgz/.tar.gz/.zip unpacked, others copied
          into: ""                   # sub-folder of the task's folder
          root: ""                   # leading folder dropped from file paths and archive members
          folder: KONIQ              # the task's folder under the data root (default: its first)
    models:
      <model>: {repo: owner/name, revision: main, subfolder: score_degradation, files: ["*.json"]}
    manual:
      <task>: what to download where, for data that cannot be fetched

`root`, `folder`, a file's `sha256` (`files: [{path: x.tar, sha256: …}]`), a model's `files`
(glob patterns, default every file of the subfolder) and `manual` extend the issue-19 schema;
files written without them keep working.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from qbench.core.userfiles import UserFileError, describe, parse_yaml, read_text

CATALOG_FILE = "catalog.yaml"


def _relative(text: str) -> str:
    """A '/'-separated path inside a repo, an archive or a task folder: never absolute, never
    '..', no backslashes (a sources file must not write outside the task's folder)."""
    path = PurePosixPath(text)
    if "\\" in text or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{text!r} must be a relative path without '..' or backslashes")
    return "/".join(p for p in path.parts if p != ".")


def _repo_id(text: str) -> str:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text) or "--" in text or ".." in text:
        raise ValueError(f"{text!r} is not a Hub repository id (owner/name)")
    return text


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise ValueError(f"{text!r} is not a sha256 (64 hex digits)")
    return text.lower()


def _file_spec(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


Relative = Annotated[str, AfterValidator(_relative)]
RepoId = Annotated[str, AfterValidator(_repo_id)]
Revision = Annotated[str, Field(min_length=1)]


class FileSpec(BaseModel):
    """A file of a repository; `sha256` pins its content (else the hub's LFS sha256, or the
    git blob id of a small file, is what it is checked against)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Relative
    sha256: Annotated[str, AfterValidator(_sha256)] | None = None


class TaskSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    repo: RepoId
    repo_type: Literal["dataset", "model"] = "dataset"
    revision: Revision = "main"
    files: Annotated[list[Annotated[FileSpec, BeforeValidator(_file_spec)]],
                     Field(min_length=1)]
    into: Relative = ""
    root: Relative = ""
    folder: Annotated[str, AfterValidator(_relative)] | None = None


class ModelSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    repo: RepoId
    repo_type: Literal["model"] = "model"
    revision: Revision = "main"
    subfolder: Relative = ""
    files: Annotated[list[str], Field(min_length=1)] = ["*"]


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: dict[str, list[TaskSource]] = Field(default_factory=dict)
    models: dict[str, ModelSource] = Field(default_factory=dict)
    manual: dict[str, str] = Field(default_factory=dict)

    def merged(self, other: Catalog) -> Catalog:
        """This catalog with `other`'s entries replacing those of the same name. A task given
        sources stops being manual."""
        manual = {k: v for k, v in self.manual.items() if k not in other.tasks} | other.manual
        return Catalog(tasks=self.tasks | other.tasks, models=self.models | other.models,
                       manual=manual)


def parse_catalog(text: str, where: str) -> Catalog:
    """A catalog or sources file's text, read with the user-file limits
    (qbench.core.userfiles), or a one-line UserFileError naming the file and key."""
    data = parse_yaml(text, where)
    try:
        return Catalog.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise UserFileError(where, describe(exc, Catalog)) from None


def read_catalog(path: Path) -> Catalog:
    return parse_catalog(read_text(path, "sources file"), f"sources file {path}")


def shipped_catalog() -> Catalog:
    text = (resources.files("qbench.data") / CATALOG_FILE).read_text(encoding="utf-8")
    return parse_catalog(text, f"qbench/data/{CATALOG_FILE}")


def load_catalog(extra: Path | None = None) -> Catalog:
    """The shipped catalog, then the config file's `sources:`, then `extra` (--sources)."""
    from qbench.core.settings import user_settings
    catalog = shipped_catalog()
    for path in (user_settings().sources, extra):
        if path is not None:
            catalog = catalog.merged(read_catalog(path))
    return catalog
