"""A loopback server that speaks enough of the Hugging Face Hub's HTTP API for the real
huggingface_hub client (pointed at it with HF_ENDPOINT) to resolve revisions, list files with
their LFS sha256, and download them: repo info (`/api/{models,datasets}/<id>[/revision/<rev>]`),
`paths-info` and `tree` listings, and `resolve/<rev>/<file>` for HEAD and GET with the ETag,
X-Repo-Commit, X-Linked-Etag/-Size headers huggingface_hub reads, Range requests (resume), and
the X-Error-Code answers it maps to its exceptions.

Faults on demand, per file: `corrupt` serves other bytes than the listed sha256; `drop_after`
closes the first GET after that many bytes (huggingface_hub resumes with a Range request);
`hold` stops a GET after some bytes until the test lets it go (a process killed mid-download).
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".tar", ".tgz", ".gz", ".zip", ".safetensors", ".bin")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit_of(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclass
class Hold:
    after: int
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []   # method, path, Range header
        self.corrupt: set[tuple[str, str]] = set()
        self.drop_after: dict[tuple[str, str], int] = {}
        self.hold: dict[tuple[str, str], Hold] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "dataset",
            commit: str | None = None, branch: str = "main") -> str:
        """A commit of `repo_id` holding `files`, the new head of `branch`; its id."""
        if commit is None:
            digest = hashlib.sha1(repo_id.encode())
            for path in sorted(files):
                digest.update(path.encode() + hashlib.sha256(files[path]).digest())
            commit = digest.hexdigest()
        repo = self.repos.setdefault((repo_type, repo_id), Repo())
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        return commit

    def downloads(self, path: str) -> list[str | None]:
        """The Range header of every GET of a file whose repo path ends with `path`."""
        return [rng for method, url, rng in self.requests
                if method == "GET" and "/resolve/" in url and url.endswith(path)]

    def close(self) -> None:
        for hold in self.hold.values():
            hold.release.set()
        self.server.shutdown()
        self.server.server_close()


def _entry(path: str, data: bytes) -> dict:
    entry = {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
    if path.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "pointerSize": 134}
    return entry


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:   # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, commit: str | None = None) -> None:
            headers = {"X-Error-Code": code, "X-Error-Message": code}
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, json.dumps({"error": code}).encode(), headers)

        def _json(self, data: object) -> None:
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _repo(self, kind: str, owner: str, name: str) -> Repo | None:
            repo = hub.repos.get((kind, f"{owner}/{name}"))
            if repo is None:
                self._error(404, "RepoNotFound")
            return repo

        def _route(self) -> None:
            url = urlsplit(self.path)
            hub.requests.append((self.command, url.path, self.headers.get("Range")))
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            if parts[:1] == ["api"] and len(parts) >= 4:
                return self._api(parts[1][:-1], parts[2], parts[3], parts[4:], url.query)
            kind = "dataset" if parts[:1] == ["datasets"] else "model"
            parts = parts[1:] if kind == "dataset" else parts
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(kind, parts[0], parts[1], parts[3], "/".join(parts[4:]))
            self._send(404)

        def _api(self, kind: str, owner: str, name: str, rest: list[str], query: str) -> None:
            repo = self._repo(kind, owner, name)
            if repo is None:
                return
            action, revision = (rest[0] if rest else "info"), "main"
            if action in ("revision", "paths-info", "tree") and len(rest) > 1:
                revision = rest[1]
            commit = repo.commit_of(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            files = repo.commits[commit]
            if action in ("info", "revision"):
                return self._json({"id": f"{owner}/{name}", "sha": commit, "private": False,
                                   "siblings": [{"rfilename": p} for p in sorted(files)]})
            if action == "paths-info":
                length = int(self.headers.get("Content-Length") or 0)
                wanted = parse_qs(self.rfile.read(length).decode()).get("paths", [])
                return self._json([_entry(p, files[p]) for p in wanted if p in files])
            if action == "tree":
                prefix = "/".join(rest[2:])
                under = {p: d for p, d in files.items()
                         if not prefix or p.startswith(prefix.rstrip("/") + "/")}
                folders = sorted({p.rsplit("/", 1)[0] for p in under if "/" in p} - {prefix})
                return self._json([{"type": "directory", "path": f, "oid": "0" * 40}
                                   for f in folders]
                                  + [_entry(p, d) for p, d in sorted(under.items())])
            self._send(404)

        def _resolve(self, kind: str, owner: str, name: str, revision: str, path: str) -> None:
            repo = self._repo(kind, owner, name)
            if repo is None:
                return
            commit = repo.commit_of(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            if path not in repo.commits[commit]:
                return self._error(404, "EntryNotFound", commit)
            data = repo.commits[commit][path]
            entry = _entry(path, data)
            etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
            key = (f"{owner}/{name}", path)
            if key in hub.corrupt:
                data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
            headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if "lfs" in entry:
                headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": len(data)}
            if self.command == "HEAD":
                return self._send(200, data, headers)
            start = 0
            if self.headers.get("Range", "").startswith("bytes="):
                start = int(self.headers["Range"][6:].split("-")[0])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            self.send_response(206 if start else 200)
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = hub.drop_after.pop(key, None)
            hold = hub.hold.get(key)
            if hold is not None and not hold.reached.is_set():
                self.wfile.write(body[:hold.after])
                self.wfile.flush()
                hold.reached.set()
                hold.release.wait(timeout=60)
                self.close_connection = True
                return
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True   # a dropped connection mid-file
                return
            self.wfile.write(body)

        do_GET = do_HEAD = do_POST = _route

    return Handler
