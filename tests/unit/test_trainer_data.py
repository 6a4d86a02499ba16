"""The multi-task training mix: readers, image checks, shuffling, the TRL rows and the dispatch
of each row to its prompt and its rewards."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from qbench.core.protocol import build_messages
from qbench.core.task import DataError
from qbench.trainer.config import (
    ComparisonSource,
    ConfigError,
    DataSettings,
    DegradationSource,
    RewardSettings,
    ScoreSource,
)
from qbench.trainer.data import collect_samples, read_comparison_pairs, synthetic_folder, to_dataset
from qbench.trainer.rewards import reward_functions


def write_image(path: Path, seed: int, mode: str = "RGB") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path.name


@pytest.fixture
def sources(tmp_path: Path) -> DataSettings:
    """KonIQ (native release CSV with its train split), a DQ-style meta and DiffIQA pairs, each
    with one broken row or image."""
    koniq = tmp_path / "koniq"
    names = [f"k{i}.jpg" for i in range(5)]
    for i, name in enumerate(names):
        write_image(koniq / "1024x768" / name, i)
    # the released sets file's header and scale (MOS 0-100, SD on the 1-5 votes)
    rows = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"] + [
        f"{n},0.0,0.1,0.3,0.5,0.1,100,{30.5 + i * 10},0.55,training" for i, n in enumerate(names)]
    rows.append("k9.jpg,0.0,0.1,0.3,0.5,0.1,100,55.0,0.55,test")
    (koniq / "koniq10k_distributions_sets.csv").write_text("\n".join(rows) + "\n")

    dq = tmp_path / "dq"
    records = [{"img_lq": write_image(dq / "n.png", 10), "distortion_class": "noise",
                "severity": 2},
               {"img_lq": write_image(dq / "j.png", 11, "L"), "distortion_class": "JPEG",
                "severity": 5},
               {"img_lq": write_image(dq / "c.png", 12), "distortion_class": "null", "severity": 0},
               {"img_lq": "absent.png", "distortion_class": "blur", "severity": 1},
               {"img_lq": "x.png", "distortion_class": "sparkle", "severity": 1}]
    (dq / "train.json").write_text(json.dumps(records))

    diff = tmp_path / "diffiqa"
    for name, seed in (("ref.png", 20), ("a.png", 21), ("b.png", 22)):
        write_image(diff / name, seed)
    (diff / "bad.png").write_bytes(b"not an image at all")
    pairs = [{"ref_image": "ref.png", "ImageA": "a.png", "ImageB": "b.png", "result": "Image A"},
             {"ref_image": "ref.png", "ImageA": "b.png", "ImageB": "a.png", "result": "Similar"},
             {"ref_image": "ref.png", "ImageA": "bad.png", "ImageB": "a.png", "result": "Image B"},
             {"ref_image": "ref.png", "ImageA": "a.png", "ImageB": "b.png", "result": "maybe"},
             {"ImageA": "a.png", "ImageB": "b.png", "result": "Image B"}]
    (diff / "pairs.json").write_text(json.dumps(pairs))
    return DataSettings(score=[ScoreSource(folder=koniq)],
                        degradation=[DegradationSource(meta=dq / "train.json")],
                        comparison=[ComparisonSource(pairs=diff / "pairs.json")], seed=7)


def test_mix_reads_every_source_and_drops_what_cannot_be_used(sources):
    data = collect_samples(sources)
    assert data.counts() == {"score": 5, "degradation": 3, "comparison": 2}
    by_kind = {s.kind: s for s in data.samples}
    assert by_kind["score"].task == "koniq" and 1.0 <= by_kind["score"].mos_norm <= 5.0
    jpeg = [s for s in data.samples if s.kind == "degradation" and s.severity == "catastrophic"]
    assert [s.distortion_class for s in jpeg] == ["jpeg"]      # "JPEG" read as the one class
    assert {s.choice for s in data.samples if s.kind == "comparison"} == {"Image A", "Similar"}
    notes = " | ".join(data.notes)
    assert "dropped 1 meta records" in notes                   # the "sparkle" class
    assert "dropped 2 records without ref_image" in notes      # "maybe" and the missing ref
    assert "1 missing images" in notes and "1 unreadable images" in notes


def test_mix_is_shuffled_reproducibly(sources):
    order = [s.id for s in collect_samples(sources).samples]
    assert order == [s.id for s in collect_samples(sources).samples]
    sources.seed = 8
    other = [s.id for s in collect_samples(sources).samples]
    assert sorted(other) == sorted(order) and other != order
    sources.limit = 4  # the first 4 of the same shuffle, less any with a bad image
    limited = [s.id for s in collect_samples(sources).samples]
    assert 1 <= len(limited) <= 4 and limited == other[:len(limited)]


def test_rows_carry_the_protocol_prompt_and_decoded_images(sources):
    samples = collect_samples(sources).samples
    rows = to_dataset(samples, image_first=True)
    assert len(rows) == len(samples)
    for row, sample in zip(rows, samples, strict=True):
        assert row["kind"] == sample.kind
        assert row["prompt"] == build_messages(sample.kind, image_first=True)
        placeholders = sum(part["type"] == "image" for message in row["prompt"]
                           for part in message["content"])
        assert placeholders == len(row["images"]) == (3 if sample.kind == "comparison" else 1)
        assert all(image.mode == "RGB" for image in row["images"])  # the grey JPEG too
    text_first = to_dataset(samples[:1], image_first=False)[0]["prompt"]
    assert text_first == build_messages(samples[0].kind, image_first=False)


def correct_answer(row: dict) -> str:
    """The right answer in the released layout, in the words the questions list."""
    if row["kind"] == "score":
        answer = f'{{"rating": {row["mos_norm"]:.2f}}}'
    elif row["kind"] == "degradation":
        said = {"jpeg": "compression"}.get(row["distortion_class"], row["distortion_class"])
        answer = json.dumps({"distortion_class": said, "severity": row["severity"]})
    else:
        answer = row["choice"]
    return f"<think>\nlooking\n</think>\n<answer>\n{answer}\n</answer>"


def test_each_row_reaches_its_own_rewards(sources):
    """TRL passes the columns of a mixed batch to every reward function: each one must answer
    for its own kind and step aside (None) for the others."""
    rows = [dict(r) for r in to_dataset(collect_samples(sources).samples)]
    columns = {key: [r[key] for r in rows] for key in rows[0] if key not in ("prompt", "images")}
    funcs, weights = reward_functions(RewardSettings(), ["score", "degradation", "comparison"])
    right = [[{"role": "assistant", "content": correct_answer(r)}] for r in rows]
    nothing = "<think>\nno idea\n</think>\n<answer>\n{}\n</answer>"
    wrong = [[{"role": "assistant", "content": nothing}] for _ in rows]
    for completions, expected_total in ((right, 2.0), (wrong, 1.0)):
        values = [f(completions=completions, **columns) for f in funcs]
        for i, row in enumerate(rows):
            applied = [v[i] is not None for v in values]
            assert applied == {"score": [True, True, False, False, False],
                               "degradation": [True, False, True, True, False],
                               "comparison": [True, False, False, False, True]}[row["kind"]]
            total = sum(w * v[i] for w, v in zip(weights, values, strict=True)
                        if v[i] is not None)
            assert total == pytest.approx(expected_total)  # "{}": the format reward alone


def test_comparison_reader_rejects_paths_outside_the_folder(tmp_path):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"ref_image": "../../etc/passwd", "ImageA": "a.png",
                                  "ImageB": "b.png", "result": "Image A"}]))
    with pytest.raises(DataError, match="leads outside the data root"):
        read_comparison_pairs(pairs, tmp_path)
    pairs.write_text('{"ref_image": "r.png"}')
    with pytest.raises(DataError, match="expected a JSON list"):
        read_comparison_pairs(pairs, tmp_path)


def test_a_source_without_usable_samples_is_an_error(tmp_path):
    meta = tmp_path / "train.json"
    meta.write_text(json.dumps([{"img_lq": "a.png", "distortion_class": "??", "severity": 1}]))
    with pytest.raises(DataError, match="no usable samples in .*train.json"):
        collect_samples(DataSettings(degradation=[DegradationSource(meta=meta)]))


def test_score_source_must_be_a_score_task(tmp_path):
    with pytest.raises(ConfigError, match="answers degradation questions, not score"):
        collect_samples(DataSettings(score=[ScoreSource(folder=tmp_path, task="dq495k")]))


def test_synthetic_degradations_generated_once_and_never_over_foreign_files(tmp_path):
    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    source = DegradationSource(synthetic=tmp_path / "synthetic", synthetic_photos=[photo],
                               synthetic_crops_per_photo=1)
    data = collect_samples(DataSettings(degradation=[source]))
    # one crop: undistorted once, and 4 distortions × 5 levels
    assert data.counts() == {"degradation": 21}
    meta = source.synthetic / "train.json"
    written = meta.stat().st_mtime_ns
    synthetic_folder(source)
    assert meta.stat().st_mtime_ns == written                  # reused, not regenerated
    foreign = DegradationSource(synthetic=tmp_path)            # holds photo.png, no train.json
    with pytest.raises(ConfigError, match="is not empty and holds no train.json"):
        synthetic_folder(foreign)
    assert photo.exists()


def test_train_check_validates_config_and_data_without_a_model(sources, tmp_path, capsys):
    from qbench.cli.main import main as qbench_main

    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text("{}")  # --check reads no weights
    config = {"model": {"path": str(model)}, "output_dir": str(tmp_path / "out"),
              "data": {"score": [{"folder": str(sources.score[0].folder)}],
                       "degradation": [{"meta": str(sources.degradation[0].meta)}],
                       "comparison": [{"pairs": str(sources.comparison[0].pairs)}]}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    # the fixture's KonIQ train split is not KonIQ's 7,058 images: the same check as
    # `qbench data check` fails it, saying why, and still reports the mix it read
    assert qbench_main(["train", "--config", str(path), "--check"]) == 1
    captured = capsys.readouterr()
    printed = " ".join((captured.out + captured.err).split())
    assert "training data differs from what it should hold:" in printed
    assert "samples in split 'train', expected 7058" in printed
    assert "config ok; the training data has 3 problem(s) (above): 10 samples " \
           "(2 comparison, 3 degradation, 5 score)" in printed   # + dropped DQ and DiffIQA rows
    assert "1 missing images" in printed
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_evaluation_tasks_are_checked_before_training(sources, tmp_path):
    from qbench.core.registry import RegistryError
    from qbench.core.task import DataNotFound
    from qbench.trainer.config import EvalSettings
    from qbench.trainer.data import check_eval_tasks

    training = collect_samples(sources).samples
    with pytest.raises(RegistryError, match="unknown task 'konik'"):
        check_eval_tasks(EvalSettings(every=10, tasks=["konik"]), training)
    with pytest.raises(ConfigError, match="eval: task koniq has no split 'dev'"):
        check_eval_tasks(EvalSettings(every=10, tasks=["koniq"], split="dev"), training)
    with pytest.raises(DataNotFound, match="koniq: .* not found in"):
        check_eval_tasks(EvalSettings(every=10, tasks=["koniq"], data_root=tmp_path / "none"),
                         training)
    koniq = {"koniq": sources.score[0].folder}
    # the fixture's KonIQ test split (k9.jpg) is not a training image
    assert check_eval_tasks(EvalSettings(every=10, tasks=["koniq"], data_paths=koniq,
                                         split="test"), training) == []
    # evaluating on the training split itself is reported
    notes = check_eval_tasks(EvalSettings(every=10, tasks=["koniq"], data_paths=koniq,
                                          split="train"), training)
    assert len(notes) == 1 and "5 of 5 koniq train samples are training images too" in notes[0]


def test_evaluation_options_are_run_options_by_their_runconfig_names():
    """eval takes `every` and any `qbench run` option under its RunConfig name, typed as there."""
    from pydantic import ValidationError

    from qbench.run.runner import RunConfig
    from qbench.trainer.config import EvalSettings
    settings = EvalSettings(every=5, tasks=["koniq", "spaq"], limit="20", data_root="data",
                            task_options={"spaq": {"resize_short_side": None}})
    run = settings.run_config(model_path=Path("ckpt"), output_dir=Path("o"), run_name="step-5")
    assert run == RunConfig(model="qinsight", tasks=["koniq", "spaq"], limit=20,
                            data_root=Path("data"), task_options={"spaq": {"resize_short_side": None}},
                            model_path=Path("ckpt"), output_dir=Path("o"), run_name="step-5",
                            progress=False)
    for bad, message in (({"data": {}}, "unknown key(s) data: besides `every`, eval takes qbench "
                                        "run options by their RunConfig names"),
                         ({"output_dir": "x"}, "output_dir: set by the evaluation itself"),
                         ({"limit": "many"}, "limit: Input should be a valid integer")):
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            EvalSettings(**bad)
