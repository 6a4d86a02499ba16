"""`qbench score`: folders, list files and single images scored to CSV, Parquet and JSONL;
killed and resumed; sharded; refusals and bad inputs as one line."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import TOY_PLUGIN
from qbench import Model
from qbench.cli.main import build_parser, main
from qbench.core import registry
from qbench.core.model import predictions_from_texts
from qbench.core.options import flags, from_args
from qbench.core.registry import create_model
from qbench.data.images import load_image
from qbench.run.runner import DEFAULT_MAX_FAILURE_RATE, RunConfig
from qbench.run.score import ScoreConfig, samples_of, score_images, this_shard


@pytest.fixture(autouse=True)
def toy_plugin():
    registry.include(TOY_PLUGIN)


def make_folder(folder: Path, n: int = 3) -> list[Path]:
    """n images of distinct brightness spread over nested sub-folders, one corrupt PNG, a text
    file and a hidden folder (neither scored). Returns the images, the corrupt one last."""
    rng = np.random.default_rng(n)
    images = []
    for i in range(n):
        path = folder / ("sub/" * (i % 3)) / f"img{i:03d}{'.jpg' if i % 2 else '.png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        level = 30 + 200 * i / max(n - 1, 1)
        pixels = np.clip(rng.normal(level, 12, (24, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=95)
        images.append(path)
    corrupt = folder / "sub" / "broken.png"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".thumbs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / ".thumbs" / "hidden.png")
    return images + [corrupt]


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


# make_folder's corrupt image is 1 of 4-6: within this budget, it makes the command exit 3
BUDGET = 0.5


def config(paths, output: Path, **kw) -> ScoreConfig:
    return ScoreConfig(paths=list(paths), output=output, **{
        "model": "toy-luma", "batch_size": 2, "progress": False, "max_failure_rate": BUDGET, **kw})


def cli(*args: str) -> list[str]:
    return ["score", *args, "--no-progress", "--max-failure-rate", str(BUDGET)]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_a_nested_folder_is_scored_by_stats_one_row_per_image(tmp_path, suffix):
    images = make_folder(tmp_path / "photos", n=5)
    output = tmp_path / "out" / f"scores{suffix}"
    result = score_images(config([tmp_path / "photos"], output, model="stats"))
    frame = read_output(output)
    assert sorted(frame["image"]) == sorted(str(p) for p in images)   # hidden and .txt left out
    assert result.exit_code == 3 and result.scored == 5 and dict(result.statuses) == {
        "ok": 5, "image_error": 1}
    broken = frame[frame["image"] == str(images[-1])].iloc[0]
    assert broken["status"] == "image_error" and math.isnan(broken["score"])
    assert "cannot decode" in broken["error"] and str(images[-1]) in broken["error"]
    # each row holds the model's own answer for that image (not a neighbour's)
    stats = create_model("stats")
    expected = stats.predict(samples_of([str(p) for p in images[:-1]]),
                             [[load_image(str(p))] for p in images[:-1]])
    ok = frame[frame["status"] == "ok"].set_index("image")
    for path, prediction in zip(images, expected):
        assert ok.loc[str(path), "score"] == pytest.approx(prediction.score, rel=1e-9)
    assert len(set(np.round(ok["score"], 6))) > 1


def test_summary_line_and_exit_status(tmp_path, capsys):
    make_folder(tmp_path / "photos", n=4)
    assert main(cli(str(tmp_path / "photos"), "--model", "toy-luma",
                    "--output", str(tmp_path / "s.csv"))) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert f"scored 4 of 5 images, 1 failed (1 image_error): {tmp_path / 's.csv'}" in err
    assert "toy-luma scores: higher is better" in err
    assert "1 file(s) in the folders are not images" in err


def test_a_list_file_relative_to_itself(tmp_path):
    images = make_folder(tmp_path / "photos", n=3)
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "todo.txt"
    listing.write_text(f"# images to score\n../photos/{images[2].relative_to(tmp_path / 'photos')}"
                       f"\n\n{images[0]}\n../photos/missing.png\n{images[0]}\n")
    output = tmp_path / "scores.csv"
    result = score_images(config([listing], output))
    frame = read_output(output)
    assert list(frame["image"]) == [str(images[2]), str(images[0]),
                                    str(tmp_path / "photos" / "missing.png")]
    assert list(frame["status"]) == ["ok", "ok", "image_error"]
    assert frame["error"][2].startswith("image not found")
    for path, score in zip(images[2::-2], frame["score"][:2]):   # toy-luma: mean luminance
        assert score == pytest.approx(np.asarray(load_image(str(path))).mean())
    assert any("given more than once" in note for note in result.notes)


def test_a_single_image_and_a_folder_together_each_image_once(tmp_path):
    images = make_folder(tmp_path / "photos", n=3)
    output = tmp_path / "scores.jsonl"
    score_images(config([images[1], tmp_path / "photos"], output))
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["image"] for r in rows][0] == str(images[1])
    assert sorted(r["image"] for r in rows) == sorted(map(str, images))


ANSWERS = {   # what a reasoning VLM might say about each image, by file name
    "img000.png": '<think>Sharp edges, "mild" noise,\nthe sky is clean.</think>'
                  '<answer>{"rating": 3.85}</answer>',
    "img001.jpg": "<think>Blurry.</think> <answer>{'rating': 2}</answer>",
    "img002.png": "<think>The image is dark and the reasoning never fin",
}


class Talks(Model):
    """Answers in text, through the parser every text-generating adapter shares."""

    def predict(self, samples, images):
        return predictions_from_texts(samples, [ANSWERS[Path(s.id).name] for s in samples], 0.3)


def test_a_vlm_answer_keeps_its_text_with_score_or_parse_error(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.MODELS, "talks", Talks)
    images = make_folder(tmp_path / "photos", n=3)
    output = tmp_path / "scores.csv"
    result = score_images(config([tmp_path / "photos"], output, model="talks"))
    frame = read_output(output).set_index("image")
    for path in images[:-1]:
        assert frame.loc[str(path), "text"] == ANSWERS[path.name]   # reasoning kept verbatim
    assert frame.loc[str(images[0]), "score"] == 3.85 and frame.loc[str(images[1]), "score"] == 2
    unparsed = frame.loc[str(images[2])]
    assert unparsed["status"] == "unparsed" and unparsed["error"] and math.isnan(unparsed["score"])
    assert dict(result.statuses) == {"ok": 2, "unparsed": 1, "image_error": 1}


def _score_cli(tmp_path: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qbench", "--include", str(TOY_PLUGIN), "score",
           str(tmp_path / "photos"), "--model", "toy-luma", "--output", str(tmp_path / "s.csv"),
           "--batch-size", "2", "--no-progress", "--max-failure-rate", str(BUDGET), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_then_resumed_scores_only_the_rest(tmp_path, capsys):
    images = make_folder(tmp_path / "photos", n=40)
    calls = tmp_path / "calls.txt"   # toy-luma appends every image it is asked about
    slow = ("--model-arg", "delay=0.1", "--model-arg", f"log={calls}")
    log = tmp_path / "s.csv.qbench" / "predictions.jsonl"
    proc = _score_cli(tmp_path, *slow)
    _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(line) for line in log.read_text().splitlines()]
    assert 10 <= len(before) < 41, "the kill must land mid-run"
    assert not (tmp_path / "s.csv").exists()   # the output is only ever written whole
    first_calls = calls.read_text().split()
    with log.open("a") as f:
        f.write('{"task": "images", "sample_id": "/tmp/img0')   # a line torn by the kill
    assert main(["--include", str(TOY_PLUGIN), *cli(str(tmp_path / "photos"), "--model", "toy-luma",
                 "--output", str(tmp_path / "s.csv"), "--batch-size", "2", *slow)]) == 3
    second_calls = calls.read_text().split()[len(first_calls):]
    scored_before = {r["sample_id"] for r in before if r["status"] == "ok"}
    assert second_calls and scored_before.isdisjoint(second_calls)
    assert set(first_calls + second_calls) == set(map(str, images[:-1]))
    frame = read_output(tmp_path / "s.csv")
    assert len(frame) == 41 and frame["image"].is_unique
    assert sorted(frame["image"]) == sorted(map(str, images))
    assert (frame["status"] == "ok").sum() == 40
    err = " ".join(capsys.readouterr().err.split())
    assert f"{len(scored_before)} from an earlier command" in err
    assert "not prediction records moved to" in err   # the torn line, set aside


def test_shards_together_cover_each_image_exactly_once(tmp_path):
    images = make_folder(tmp_path / "photos", n=24)
    parts = []
    for index in range(2):
        result = score_images(config([tmp_path / "photos"], tmp_path / "scores.jsonl",
                                     shard=(index, 2)))
        assert result.output == tmp_path / f"scores-shard{index}of2.jsonl"
        parts.append(list(read_output(result.output)["image"]))
        expected = this_shard(samples_of(sorted(map(str, images))), config([], Path("x.csv"),
                                                                           shard=(index, 2)))
        assert sorted(parts[-1]) == sorted(s.id for s in expected)
    assert all(parts) and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(map(str, images))


class PairsOnly(Model):
    """Answers comparison questions only."""
    kinds = frozenset({"comparison"})

    def predict(self, samples, images):
        raise AssertionError("never asked")


class FullReferenceMetric(PairsOnly):
    """Declares score questions but, built, answers only comparisons (as pyiqa's FR metrics)."""
    kinds = frozenset({"score", "comparison"})

    def __init__(self, config):
        super().__init__(config)
        self.kinds = frozenset({"comparison"})


@pytest.mark.parametrize("model", [PairsOnly, FullReferenceMetric])
def test_a_model_that_does_not_answer_score_questions_is_refused(tmp_path, monkeypatch, capsys,
                                                                 model):
    monkeypatch.setitem(registry.MODELS, "pairs-only", model)
    make_folder(tmp_path / "photos", n=2)
    assert main(cli(str(tmp_path / "photos"), "--model", "pairs-only",
                    "--output", str(tmp_path / "s.csv"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not answer score questions" in err
    assert not (tmp_path / "s.csv").exists()


class Crashes(Model):
    """Fails on every batch, as a model with a bug does."""

    def predict(self, samples, images):
        raise RuntimeError("a bug")


def test_model_errors_past_the_budget_stop_the_command_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.MODELS, "crashes", Crashes)
    make_folder(tmp_path / "photos", n=20)
    output = tmp_path / "s.csv"
    assert main(["score", str(tmp_path / "photos"), "--model", "crashes", "--output",
                 str(output), "--batch-size", "2", "--no-progress"]) == 1   # the default budget
    frame = read_output(output)
    # 21 images allow int(0.05 * 21) = 1 model error: the first batch of 2 exceeds it
    assert (frame["status"] == "model_error").sum() == 2
    assert (frame["status"] == "missing").sum() == 19
    assert (tmp_path / "s.csv.qbench" / "errors.log").read_text().count("RuntimeError: a bug")
    err = " ".join(capsys.readouterr().err.split())
    assert "FAILED:" in err and "--max-failure-rate 0.05" in err and "Traceback" not in err


def test_every_image_failed_exits_1(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "photos" / name).write_bytes(b"not an image")
    assert main(cli(str(tmp_path / "photos"), "--model", "toy-luma",
                    "--output", str(tmp_path / "s.csv"))) == 1
    assert list(read_output(tmp_path / "s.csv")["status"]) == ["image_error", "image_error"]
    assert "FAILED: 2 of 2 images got no answer (2 image errors)" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_command_twice_at_once_refuses_or_waits(tmp_path, capsys):
    make_folder(tmp_path / "photos", n=11)
    first = _score_cli(tmp_path, "--model-arg", "delay=0.25")   # 6 batches: about 1.5 s
    lock = tmp_path / "s.csv.qbench" / ".lock"
    _wait_for(lambda: lock.exists() and lock.read_text().startswith("pid"))
    again = ["--include", str(TOY_PLUGIN), *cli(str(tmp_path / "photos"), "--model", "toy-luma",
                                             "--output", str(tmp_path / "s.csv"),
                                             "--batch-size", "2", "--model-arg", "delay=0.25")]
    assert main(again) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"output {tmp_path / 's.csv'} is in use by pid {first.pid}" in err
    assert main([*again, "--wait"]) == 3   # queues behind the first, then finds all done
    assert first.wait(timeout=60) == 3, first.stderr.read().decode()
    assert "11 from an earlier command" in " ".join(capsys.readouterr().err.split())
    assert read_output(tmp_path / "s.csv")["image"].is_unique


def test_a_log_of_other_model_settings_is_not_mixed_in(tmp_path, capsys):
    make_folder(tmp_path / "photos", n=2)
    output = str(tmp_path / "s.csv")
    assert main(cli(str(tmp_path / "photos"), "--model", "toy-luma", "--output", output)) == 3
    assert main(cli(str(tmp_path / "photos"), "--model", "toy-luma", "--model-arg", "delay=0",
                    "--output", output)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("qbench: error:") and "was started by toy-luma" in err


@pytest.mark.parametrize("case", ["missing path", "empty folder", "unknown suffix",
                                  "output folder not writable", "output is a folder",
                                  "output not ours", "list not text"])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, case):
    make_folder(tmp_path / "photos", n=2)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "theirs.csv").write_text("id,label\n1,2\n")
    (tmp_path / "list.txt").write_bytes(b"\xff\xfe\x00binary")
    photos, out = str(tmp_path / "photos"), str(tmp_path / "s.csv")
    argv, expected = {
        "missing path": ([str(tmp_path / "nope"), "--output", out], "no such image, folder"),
        "empty folder": ([str(tmp_path / "empty"), "--output", out], "no images in"),
        "unknown suffix": ([photos, "--output", str(tmp_path / "s.xlsx")], "unknown format .xlsx"),
        "output folder not writable": ([photos, "--output", str(tmp_path / "blocker" / "s.csv")],
                                       "cannot use"),
        "output is a folder": ([photos, "--output", str(tmp_path / "photos.csv")], "is a folder"),
        "output not ours": ([photos, "--output", str(tmp_path / "theirs.csv")],
                            "was not written by qbench score"),
        "list not text": ([str(tmp_path / "list.txt"), "--output", out], "not a UTF-8 text"),
    }[case]
    if case == "output is a folder":
        (tmp_path / "photos.csv").mkdir()
    assert main(cli(*argv, "--model", "toy-luma")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("qbench: error:") and expected in err, err
    assert (tmp_path / "theirs.csv").read_text() == "id,label\n1,2\n"


def test_shared_options_are_run_options():
    """The options `score` shares with `run` are RunConfig's fields: same flag, parser and
    default; only the help may be reworded."""
    run_flags = {f.name: (f, spec) for f, spec in flags(RunConfig)}
    for f, spec in flags(ScoreConfig):
        if f.name in run_flags:
            run_field, run_spec = run_flags[f.name]
            assert (spec.flag, spec.parse, spec.repeated, spec.metavar, spec.negate) == (
                run_spec.flag, run_spec.parse, run_spec.repeated, run_spec.metavar,
                run_spec.negate)
    argv = ["score", "a", "b.txt", "--model", "m", "--model-arg", "k=1", "--model-arg", "t=true",
            "--shard", "1/4", "--limit", "5", "--batch-size", "3", "--output", "o.parquet",
            "--max-failure-rate", "0.5", "--wait", "--no-progress", "--include", "p.py"]
    args = build_parser().parse_args(argv)
    parsed = from_args(ScoreConfig, args, paths=[Path(p) for p in args.paths])
    assert parsed == ScoreConfig(
        paths=[Path("a"), Path("b.txt")], model="m", model_options={"k": 1, "t": True},
        shard=(1, 4), limit=5, batch_size=3, output=Path("o.parquet"), max_failure_rate=0.5,
        wait=True, progress=False, include=[Path("p.py")])
    defaults = from_args(ScoreConfig, build_parser().parse_args(["score", "a"]), paths=[Path("a")])
    assert (defaults.model, defaults.batch_size, defaults.max_failure_rate, defaults.workers) == (
        RunConfig().model, RunConfig().batch_size, DEFAULT_MAX_FAILURE_RATE, RunConfig().workers)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_an_image_is_a_counted_image_error_never_a_hang(tmp_path, capsys):
    import threading
    images = make_folder(tmp_path / "photos", n=3)
    os.mkfifo(tmp_path / "photos" / "pipe.png")   # nothing writes to it
    output = tmp_path / "s.csv"
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(main(cli(
        str(tmp_path / "photos"), "--model", "toy-luma", "--output", str(output)))), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "qbench score blocked on the FIFO"
    assert code == [3]
    frame = read_output(output).set_index("image")
    pipe = frame.loc[str(tmp_path / "photos" / "pipe.png")]
    assert pipe["status"] == "image_error" and "is a FIFO" in pipe["error"]
    assert (frame["status"] == "ok").sum() == len(images) - 1
    err = " ".join(capsys.readouterr().err.split())
    assert "2 image_error" in err and "is a FIFO" in err
    # a FIFO given as a PATH itself: one line, exit 2, never opened
    assert main(cli(str(tmp_path / "photos" / "pipe.png"), "--model", "toy-luma",
                    "--output", str(tmp_path / "t.csv"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pipe.png is a FIFO (named pipe), not an image" in err


def test_a_resume_scores_again_an_image_replaced_since(tmp_path, capsys):
    images = make_folder(tmp_path / "photos", n=4)[:-1]
    calls = tmp_path / "calls.txt"   # toy-luma appends every image it is asked about
    argv = cli(str(tmp_path / "photos"), "--model", "toy-luma", "--output",
               str(tmp_path / "s.csv"), "--model-arg", f"log={calls}")
    assert main(argv) == 3
    before = read_output(tmp_path / "s.csv").set_index("image")["score"]
    replaced = images[1]
    Image.new("RGB", (40, 30), (250, 250, 250)).save(replaced)   # same name, other pixels
    stamp = replaced.stat()
    os.utime(replaced, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # coarse clocks
    first_calls = calls.read_text().split()
    capsys.readouterr()
    assert main(argv) == 3
    assert calls.read_text().split()[len(first_calls):] == [str(replaced)]
    after = read_output(tmp_path / "s.csv").set_index("image")["score"]
    assert after[str(replaced)] == pytest.approx(250.0) != before[str(replaced)]
    for other in (images[0], images[2]):
        assert after[str(other)] == before[str(other)]
    err = " ".join(capsys.readouterr().err.split())
    assert "1 image(s) changed since they were scored (file size or modification time): " \
           "scored again" in err
    assert "3 from an earlier command" in err   # the three others; the broken one is tried again
