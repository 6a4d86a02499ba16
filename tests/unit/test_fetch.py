"""`qbench fetch` against a loopback hub (tests/support/hub_server.py) that serves the shipped catalog's
repositories, revisions and layout with small data: the real huggingface_hub client downloads,
qbench verifies, unpacks and records; `data check` and `run` then read what it laid out."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from hub_server import Hold
from qbench.cli.main import main
from qbench.data.fetch import weights_path, weights_source
from qbench.data.sources import shipped_catalog

QALIGN = "q-future/q-align-datasets"
DEQA = "zhiyuanyou/Data-DeQA-Score"
PINNED = shipped_catalog().tasks["koniq"][0].revision   # the commit the catalog pins


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value % 256, value // 256 % 256, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def tar_of(members: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def deqa_meta(dataset: str, names: list[str]) -> bytes:
    records = [{"id": n, "image": f"{dataset}/images/{n}", "gt_score": 10.0 + i,
                "gt_score_norm": 1 + 4 * i / max(len(names) - 1, 1)} for i, n in enumerate(names)]
    return json.dumps(records).encode()


def serve_koniq(hub, n: int = 6, archive: bytes | None = None) -> list[str]:
    """KonIQ as the catalog fetches it: Q-Align's koniq.tar (koniq/<name>.jpg) at the pinned
    commit, and the DeQA meta (KONIQ/metas/test_koniq_2k.json) on main."""
    names = [f"{1000 + i}.jpg" for i in range(n)]
    hub.add(QALIGN, {"koniq.tar": archive or tar_of(
        {f"koniq/{name}": jpeg(i) for i, name in enumerate(names)} | {"koniq/._1000.jpg": b"x"})},
        commit=PINNED)
    hub.add(DEQA, {"KONIQ/metas/test_koniq_2k.json": deqa_meta("KONIQ", names),
                   "README.md": b"metas"})
    return names


def fetch(*args: str) -> int:
    return main(["fetch", *args])


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_fetch_lays_out_verifies_records_and_data_check_reports_ready(hub, tmp_path, capsys):
    names = serve_koniq(hub, n=2010)   # the published count of the DeQA KonIQ test meta
    root = tmp_path / "data"
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 0
    err = capsys.readouterr().err
    assert "koniq.tar" in err and "to download: 2 files" in err     # listed with sizes first
    folder = root / "KONIQ"
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(names)  # no ._ files
    assert (folder / "metas" / "test_koniq_2k.json").is_file()
    assert not list(root.glob(".KONIQ*"))                          # no partial folder left
    record = json.loads((folder / "qbench-source.json").read_text())["sources"]
    served = hub.repos[("dataset", QALIGN)].commits[PINNED]["koniq.tar"]
    assert record[0]["repo"] == QALIGN
    assert record[0]["commit"] == PINNED and record[0]["file"] == "koniq.tar"
    assert record[0]["sha256"] == hashlib.sha256(served).hexdigest()
    assert record[0]["unpacked_files"] == 2010 and record[0]["left_out"] == 1
    assert record[1]["repo"] == DEQA and record[1]["copied_to"] == "metas/test_koniq_2k.json"

    assert main(["data", "check", "--tasks", "koniq", "--data-root", str(root), "--no-decode"]) == 0
    out = capsys.readouterr().out
    assert "koniq: ok" in out and "2010 samples (expected 2010)" in out

    before = len(hub.downloads("koniq.tar"))
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 0    # nothing to do
    assert len(hub.downloads("koniq.tar")) == before
    assert "koniq: ready" in capsys.readouterr().err


def test_corrupted_file_is_one_line_exit_2_and_nothing_unpacked(hub, tmp_path, capsys):
    serve_koniq(hub)
    hub.corrupt.add((QALIGN, "koniq.tar"))
    root = tmp_path / "data"
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "koniq.tar" in line and "checksum mismatch" in line
    assert not (root / "KONIQ").exists() and not list(root.glob(".KONIQ*"))
    hub.corrupt.clear()   # the bad copy was removed: the next fetch downloads it again
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 0
    assert len(hub.downloads("koniq.tar")) == 2


def special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("member,why", [
    (tarfile.TarInfo("koniq/../../evil.jpg"), "outside its folder"),
    (tarfile.TarInfo("/tmp/evil.jpg"), "outside its folder"),
    (special("koniq/link.jpg", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
    (special("koniq/hard.jpg", tarfile.LNKTYPE, "koniq/1000.jpg"), "a link"),
    (special("koniq/dev", tarfile.CHRTYPE), "a device"),
    (special("other/fifo", tarfile.FIFOTYPE), "a device"),   # refused even outside the root
], ids=["dotdot", "absolute", "symlink", "hardlink", "device", "fifo"])
def test_unsafe_tar_member_refuses_the_archive(hub, tmp_path, capsys, member, why):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:   # a .tar served gzipped: r|* reads it
        tar.addfile(tarfile.TarInfo("koniq/1000.jpg"), io.BytesIO(b""))
        member.size = 0
        tar.addfile(member, io.BytesIO(b""))
    serve_koniq(hub, archive=buffer.getvalue())
    root = tmp_path / "data"
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert why in line and member.name in line and "nothing unpacked" in line
    assert not (root / "KONIQ").exists() and not list(root.glob(".KONIQ*"))
    assert not (tmp_path / "evil.jpg").exists() and not Path("/tmp/evil.jpg").exists()


@pytest.mark.parametrize("name,mode,why", [
    ("koniq/../evil.jpg", 0o100644, "outside its folder"),
    ("koniq/link.jpg", 0o120777, "a link"),
], ids=["dotdot", "symlink"])
def test_unsafe_zip_member_refuses_the_archive(hub, tmp_path, capsys, name, mode, why):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("koniq/1000.jpg", jpeg(1))
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, "/etc/passwd")
    serve_koniq(hub)
    sources = tmp_path / "zip.yaml"
    sources.write_text("tasks:\n  koniq:\n    - {repo: lab/zipped, files: [koniq.zip], "
                       "folder: KONIQ, into: images, root: koniq}\n")
    hub.add("lab/zipped", {"koniq.zip": buffer.getvalue()})
    assert fetch("--tasks", "koniq", "--data-root", str(tmp_path / "d"), "--sources",
                 str(sources)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert why in line and name in line
    assert not (tmp_path / "d" / "KONIQ").exists() and not (tmp_path / "evil.jpg").exists()


def test_interrupted_download_resumes_with_a_range_request(hub, tmp_path):
    # huggingface_hub keeps what it received in whole 10 MiB chunks: a 24 MiB archive
    names = [f"{1000 + i}.jpg" for i in range(40)]
    members = {f"koniq/{n}": jpeg(i) for i, n in enumerate(names)}
    serve_koniq(hub, n=40, archive=tar_of(members | {"other/padding.bin": bytes(24 << 20)}))
    hub.drop_after[(QALIGN, "koniq.tar")] = 22 << 20   # the connection drops mid-file
    root = tmp_path / "data"
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 0
    first, second = hub.downloads("koniq.tar")
    assert first is None and second == f"bytes={20 << 20}-"   # resumed after the 2 chunks kept
    assert sorted(p.name for p in (root / "KONIQ" / "images").iterdir()) == names


def test_killed_fetch_leaves_nothing_ready_and_a_new_fetch_completes(hub, tmp_path, capsys):
    serve_koniq(hub, n=40)
    hold = hub.hold[(QALIGN, "koniq.tar")] = Hold(after=3000)
    root = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.Popen([sys.executable, "-m", "qbench", "fetch", "--tasks", "koniq",
                             "--data-root", str(root)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert hold.reached.wait(timeout=120), "the fetch never started downloading"
    finally:
        proc.kill()
        proc.wait()
        hold.release.set()
    assert not (root / "KONIQ").exists()
    assert main(["data", "check", "--tasks", "koniq", "--data-root", str(root)]) == 1
    assert "koniq: NOT READY" in capsys.readouterr().out
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 0
    assert main(["data", "check", "--tasks", "koniq", "--data-root", str(root)]) == 1  # 40 ≠ 2010
    assert "koniq: PROBLEMS" in capsys.readouterr().out


def test_offline_fetch_uses_the_cache_only(hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants
    serve_koniq(hub)
    root = tmp_path / "data"
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 0
    shutil.rmtree(root / "KONIQ")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    asked = len(hub.requests)
    assert fetch("--tasks", "koniq", "--data-root", str(root)) == 0
    assert len(hub.requests) == asked                    # the hub was not asked
    assert len(list((root / "KONIQ" / "images").iterdir())) == 6
    assert "HF_HUB_OFFLINE=1: the cache only" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert fetch("--tasks", "koniq", "--data-root", str(tmp_path / "other")) == 2
    assert "not in the Hugging Face cache" in one_error_line(capsys.readouterr().err)


def serve_weights(hub, repo: str = "ByteDance/Q-Insight", subfolder: str = "score_degradation"
                  ) -> str:
    files = {f"{subfolder}/config.json": b'{"model_type": "qwen2_5_vl"}',
             f"{subfolder}/model.safetensors": b"\0" * 4096,
             f"{subfolder}/global_step10/optim.pt": b"optimizer state",
             "RALI/best/ckpt.json": b"{}", "README.md": b"card"}
    return hub.add(repo, files, repo_type="model")


def test_weights_are_fetched_verified_stamped_and_found_by_the_run(hub, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("QBENCH_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("QBENCH_MODEL_ROOT", raising=False)
    commit = serve_weights(hub)
    assert weights_path("qinsight", "Q-Insight/score_degradation") is None
    assert fetch("--model", "qinsight") == 0
    assert "weights in" in capsys.readouterr().err
    got = [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
    assert {r[1].rsplit("/", 1)[1] for r in got} == {"config.json", "model.safetensors"}
    folder = weights_path("qinsight", "Q-Insight/score_degradation")
    assert folder is not None and (folder / "model.safetensors").is_file()
    assert weights_source(folder) == {"repo": "ByteDance/Q-Insight", "repo_type": "model",
                                      "commit": commit, "subfolder": "score_degradation"}
    blob = (folder / "model.safetensors").resolve()
    blob.write_bytes(b"\1" * 10)     # a damaged cache is no verified set of weights
    assert weights_path("qinsight", "Q-Insight/score_degradation") is None


def test_sources_file_redirects_a_task_and_a_model(hub, tmp_path, monkeypatch, capsys):
    names = [f"{i}.jpg" for i in range(3)]
    images = _zip({f"x/{n}": jpeg(i) for i, n in enumerate(names)})
    hub.add("lab/koniq-mirror", {"images.zip": images,
                                 "meta/test_koniq_2k.json": deqa_meta("KONIQ", names)})
    commit = serve_weights(hub, "lab/qinsight-mirror", "sd")
    lab = tmp_path / "lab.yaml"
    lab.write_text("tasks:\n  koniq:\n"
                   "    - {repo: lab/koniq-mirror, files: [images.zip], folder: KONIQ, root: x, "
                   "into: images}\n"
                   "    - {repo: lab/koniq-mirror, files: [meta/test_koniq_2k.json], "
                   "folder: KONIQ, root: meta, into: metas}\n"
                   "models:\n  qinsight: {repo: lab/qinsight-mirror, subfolder: sd, "
                   "files: ['*.json', '*.safetensors']}\n")
    (tmp_path / "config.yaml").write_text("sources: lab.yaml\n")   # relative to the config file
    monkeypatch.setenv("QBENCH_CONFIG", str(tmp_path / "config.yaml"))
    root = tmp_path / "data"
    assert fetch("--tasks", "koniq", "--model", "qinsight", "--data-root", str(root)) == 0
    record = json.loads((root / "KONIQ" / "qbench-source.json").read_text())["sources"]
    assert [r["repo"] for r in record] == ["lab/koniq-mirror"] * 2
    assert sorted(p.name for p in (root / "KONIQ" / "images").iterdir()) == names
    assert (root / "KONIQ" / "metas" / "test_koniq_2k.json").is_file()
    folder = weights_path("qinsight", "Q-Insight/score_degradation")
    assert folder is not None and weights_source(folder)["commit"] == commit
    assert QALIGN not in capsys.readouterr().err


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("text,message", [
    ("tasks:\n  koniq:\n    - {repo: a/b, files: [x.tar], into: /etc}\n", "into"),
    ("tasks:\n  koniq:\n    - {repo: a/b, files: [x.tar], unknown: 1}\n", "unknown"),
    ("models:\n  qinsight: {repo: not-a-repo}\n", "repo"),
    ("tasks:\n  koniq:\n    - {repo: a/b, files: [{path: x.tar, sha256: abc}]}\n", "sha256"),
    ("tasks: [\n", "YAML"),
], ids=["absolute-into", "unknown-key", "bad-repo", "bad-sha", "bad-yaml"])
def test_bad_sources_file_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert fetch("--tasks", "koniq", "--sources", str(path), "--dry-run") == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line and message in line


def test_a_folder_qbench_did_not_fill_is_never_replaced(hub, tmp_path, capsys):
    serve_koniq(hub)
    (tmp_path / "data" / "KONIQ").mkdir(parents=True)
    (tmp_path / "data" / "KONIQ" / "mine.txt").write_text("user data")
    assert fetch("--tasks", "koniq", "--data-root", str(tmp_path / "data")) == 2
    assert "not filled by qbench fetch" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "data" / "KONIQ" / "mine.txt").read_text() == "user data"


def test_tasks_that_cannot_be_fetched_say_what_to_download(tmp_path, capsys):
    assert fetch("--tasks", "sriqa,dq495k", "--data-root", str(tmp_path), "--dry-run") == 0
    err = capsys.readouterr().err
    assert "sriqa: not fetched" in err and "SRIQA-Bench/MOS/" in err
    assert "dq495k: not fetched" in err and "test.json" in err


def test_run_fetches_what_it_lacks_and_the_manifest_records_it(hub, tmp_path, capsys):
    serve_koniq(hub)
    root, out = tmp_path / "data", tmp_path / "results"
    code = main(["run", "--model", "stats", "--tasks", "koniq,sriqa", "--data-root", str(root),
                 "--output", str(out), "--no-progress"])
    assert code == 3                       # 6 samples where the published split has 2010
    err = capsys.readouterr().err
    assert "fetching what this run needs and lacks: koniq" in err and "koniq.tar" in err
    assert "skipped sriqa" in err and "ChrisDud0257/AFINE" in err
    manifest = json.loads(next(out.glob("stats-*/manifest.json")).read_text())
    fetched = manifest["tasks"]["koniq"]["fetched"]
    assert [(f["repo"], f["file"]) for f in fetched] == [
        (QALIGN, "koniq.tar"), (DEQA, "KONIQ/metas/test_koniq_2k.json")]
    assert fetched[0]["commit"] == PINNED and len(fetched[0]["sha256"]) == 64
    assert "no_fetch" not in manifest["config"]


def test_no_fetch_and_offline_leave_the_hub_alone(hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants
    serve_koniq(hub)
    args = ["run", "--model", "stats", "--tasks", "koniq", "--data-root", str(tmp_path / "d"),
            "--output", str(tmp_path / "r"), "--no-progress"]
    assert main([*args, "--no-fetch"]) == 2     # a data root that is not there: a typo
    assert "--data-root" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    assert main([*args, "--no-fetch"]) == 1     # nothing ran
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(args) == 1
    assert hub.requests == [] and "skipped koniq" in capsys.readouterr().err
