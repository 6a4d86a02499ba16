"""The command as written: `qbench run --model qinsight --tasks all` with nothing local, against
a loopback hub serving the shipped catalog's repositories, commits and layout (small images, a
tiny random Qwen2.5-VL as the weights). It fetches, verifies, records and runs; SRIQA-Bench and
DQ-495K are skipped with what to download. `--model visualquality-r1` the same way, with its
release's prompt and answer format."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from qbench import ModelConfig, Sample
from qbench.baselines.qinsight import VQ_QUESTION, VQ_THINKING, VisualQualityR1
from qbench.cli.main import main
from qbench.data.sources import shipped_catalog
from qbench.testing.tiny import build_tiny_qwen2_5_vl, tiny_processor

TABLE1 = ("koniq", "spaq", "kadid", "pipal", "livew", "agiqa3k", "csiq")


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (value * 40 % 256, 90, 120)).save(buffer, "PNG")
    return buffer.getvalue()


def archive(members: dict[str, bytes], gz: bool) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def serve_catalog(hub, n: int = 3) -> dict:
    """Every repository the shipped catalog names, at its revision, with each task's archive
    under the catalog's root and a DeQA meta naming the images where the metas put them. PIPAL's
    archive keeps pyiqa's layout (Dist_Imgs/), which the metas do not name."""
    repos: dict[tuple[str, str], dict[str, bytes]] = {}
    for task, sources in shipped_catalog().tasks.items():
        archive_source, meta_source = sources
        names = [f"{task}_{i}.png" for i in range(n)]
        inside = {"csiq": "dst_imgs/awgn/", "pipal": "Dist_Imgs/"}.get(task, "")
        named = {"csiq": "dst_imgs/awgn/", "pipal": "Distortion_1/"}.get(task, "")
        path = archive_source.files[0].path
        repos.setdefault((archive_source.repo, archive_source.revision), {})[path] = archive(
            {f"{archive_source.root}/{inside}{name}": png(i) for i, name in enumerate(names)},
            gz=path.endswith(".tgz"))
        folder = meta_source.folder
        records = [{"id": name, "image": f"{folder}/images/{named}{name}", "gt_score": float(i),
                    "gt_score_norm": 1.0 + 2 * i} for i, name in enumerate(names)]
        repos.setdefault((meta_source.repo, meta_source.revision), {})[
            meta_source.files[0].path] = json.dumps(records).encode()
    for (repo, revision), files in repos.items():
        hub.add(repo, files, commit=revision if len(revision) == 40 else None)
    return repos


def serve_weights(hub, tmp_path: Path, repo: str, subfolder: str) -> str:
    tiny = build_tiny_qwen2_5_vl(tmp_path / "tiny", seed=3)
    files = {(f"{subfolder}/" if subfolder else "") + p.name: p.read_bytes()
             for p in tiny.iterdir() if p.is_file()}
    return hub.add(repo, files | {"RALI/best/ckpt.json": b"{}"}, repo_type="model")


def unpinned_pipal(tmp_path: Path, monkeypatch) -> None:
    """The catalog pins pipal.tar's real sha256, which a small stand-in cannot match: the same
    entry without the pin, through the config file's `sources:` (the run reads it)."""
    entries = [s.model_dump() for s in shipped_catalog().tasks["pipal"]]
    entries[0]["files"] = [{"path": "pipal.tar"}]
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump({"tasks": {"pipal": entries}}))
    (tmp_path / "config.yaml").write_text("sources: lab.yaml\n")
    monkeypatch.setenv("QBENCH_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.delenv("QBENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("QBENCH_MODEL_ROOT", raising=False)


@pytest.mark.slow
def test_run_qinsight_tasks_all_from_nothing(hub, tmp_path, monkeypatch, capsys):
    serve_catalog(hub)
    commit = serve_weights(hub, tmp_path, "ByteDance/Q-Insight", "score_degradation")
    unpinned_pipal(tmp_path, monkeypatch)
    out = tmp_path / "results"
    code = main(["run", "--model", "qinsight", "--tasks", "all", "--limit", "2",
                 "--batch-size", "2", "--model-arg", "max_new_tokens=8", "--output", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1, err    # random weights: no answer parses (the runner's contract)
    assert "fetching what this run needs and lacks" in err and "qinsight weights" in err
    assert "skipped sriqa" in err and "ChrisDud0257/AFINE" in err
    assert "skipped dq495k" in err and "test.json" in err
    manifest = json.loads(next(out.glob("qinsight-*/manifest.json")).read_text())
    assert manifest["model_settings"]["weights_source"] == {
        "repo": "ByteDance/Q-Insight", "repo_type": "model", "commit": commit,
        "subfolder": "score_degradation"}
    metrics = json.loads(next(out.glob("qinsight-*/metrics.json")).read_text())
    for task in TABLE1:
        fetched = manifest["tasks"][task]["fetched"]
        assert len(fetched) == 2 and all(len(f["sha256"]) == 64 for f in fetched)
        assert metrics[task]["n"] == 2
    # PIPAL's archive does not lay its images out where the DeQA meta names them: they are
    # found by file name, and the task says so
    assert all("image_error" not in metrics[t]["failure_counts"] for t in TABLE1)
    assert any("found by file name" in note for note in metrics["pipal"]["notes"])
    data = tmp_path / "qbench-cache" / "data"
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == [
        "AGIQA3K", "CSIQ", "KADID10K", "KONIQ", "LIVE-WILD", "PIPAL", "SPAQ"]
    before = len(hub.requests)   # everything is local now: a second run asks the hub nothing
    main(["run", "--model", "qinsight", "--tasks", "all", "--limit", "2", "--batch-size", "2",
          "--model-arg", "max_new_tokens=8", "--output", str(out), "--no-progress"])
    assert len(hub.requests) == before


@pytest.mark.slow
def test_run_visualquality_r1_fetches_and_runs(hub, tmp_path, monkeypatch, capsys):
    serve_catalog(hub)
    serve_weights(hub, tmp_path, "TianheWu/VisualQuality-R1-7B", "")
    unpinned_pipal(tmp_path, monkeypatch)
    out = tmp_path / "results"
    assert main(["run", "--model", "visualquality-r1", "--tasks", "koniq", "--limit", "2",
                 "--model-arg", "max_new_tokens=8", "--output", str(out), "--no-progress"]) == 1
    manifest = json.loads(next(out.glob("visualquality-r1-*/manifest.json")).read_text())
    settings = manifest["model_settings"]
    assert settings["weights_source"]["repo"] == "TianheWu/VisualQuality-R1-7B"
    assert settings["thinking"] is True and settings["decoding"]["top_k"] == 50
    assert settings["decoding"]["max_new_tokens"] == 8 and settings["decoding"]["do_sample"]


class Scripted:
    def __init__(self, answers: list[str]):
        self.processor, self.answers, self.prompts = tiny_processor(), answers, []

    def generate(self, prompts, images, decoding, seed):
        self.prompts += prompts
        return [[a] for a in self.answers[:len(prompts)]]

    def close(self) -> None:
        pass


def test_visualquality_r1_prompt_and_answers_as_released():
    generator = Scripted(["<think>\nsharp, well exposed\n</think>\n<answer> 3.85 </answer>",
                          "<answer>4</answer>", "no tags, no number"])
    model = VisualQualityR1(ModelConfig(options={"max_new_tokens": 64}), generator=generator)
    samples = [Sample(id=f"s{i}", task="t", kind="score", images=("x.png",)) for i in range(3)]
    got = model.predict(samples, [[Image.new("RGB", (32, 32))]] * 3)
    assert [p.score for p in got] == [3.85, 4.0, None] and got[2].status == "unparsed"
    prompt = generator.prompts[0]
    # no system turn of its own (the template's default), image first with the release's
    # add_vision_id label, then the training question template
    assert "A conversation between User and Assistant" not in prompt
    assert ("Picture 1: <|vision_start|><|image_pad|><|vision_end|>"
            + VQ_THINKING.format(Question=VQ_QUESTION)) in prompt
    assert model.decoding.do_sample and model.decoding.top_k == 50 and model.decoding.top_p == 1.0
    assert model.decoding.temperature == 1.0    # the checkpoint sets none: transformers' default
