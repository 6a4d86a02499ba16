import json

import pytest

from qbench import ModelConfig, ModelError, Sample
from qbench.baselines.precomputed import PrecomputedModel
from qbench.cli import main


def model_for(path, **options) -> PrecomputedModel:
    return PrecomputedModel(ModelConfig(model_path=path, options=options))


def sample(image: str, kind: str = "score", task: str = "koniq", sid: str | None = None) -> Sample:
    return Sample(id=sid or image.rsplit("/", 1)[-1], task=task, kind=kind, images=(image,))


def test_rows_match_by_id_path_tail_or_unique_file_name(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("task,image,score\n"
                   "koniq,1024x768/a.jpg,3.5\n"
                   "koniq,b.jpg,abc\n"
                   ",c.jpg,2.0\n"          # no task: serves every task
                   "spaq,d.jpg,4.0\n")     # another task's row
    model = model_for(csv)
    preds = model.predict([sample("/data/koniq/1024x768/a.jpg"), sample("/data/koniq/1024x768/b.jpg"),
                           sample("/data/koniq/1024x768/c.jpg"), sample("/data/koniq/1024x768/d.jpg"),
                           sample("/data/koniq/1024x768/e.jpg")], [])
    assert [p.status for p in preds] == ["ok", "unparsed", "ok", "missing", "missing"]
    assert preds[0].score == 3.5 and preds[2].score == 2.0
    assert "not a number" in preds[1].error


def test_bare_file_name_must_be_unique(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"image": "x.png", "score": 1.0}, {"image": "a/x.png", "score": 2.0},
        {"image": "b/y.png", "score": 3.0}]) + "\n")
    model = model_for(jsonl)
    ambiguous, by_tail, by_name = model.predict(
        [sample("/d/c/x.png", sid="c/x.png"), sample("/d/a/x.png", sid="a/x.png"),
         sample("/d/q/y.png", sid="q/y.png")], [])
    assert ambiguous.status == "missing"        # "x.png" names two rows' files
    assert by_tail.score == 2.0
    assert by_name.status == "missing"          # y.png's row says b/, the sample is in q/: no bare row


def test_degradation_and_choice_answers(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("image,distortion_class,severity,choice\n"
                   "a.png,JPEG,4,\nb.png,compression,slight,\nc.png,null,0,\nd.png,rain,slight,\n"
                   "e.png,,,image b\n")
    model = model_for(csv)
    deg = model.predict([sample(f"/d/{n}.png", "degradation", "dq495k") for n in "abcd"], [])
    assert [(p.distortion_class, p.severity) for p in deg[:3]] == [
        ("jpeg", "serious"), ("jpeg", "slight"), ("null", "null")]
    assert deg[3].status == "unparsed"
    (choice,) = model.predict([sample("/d/e.png", "comparison", "sriqa-compare")], [])
    assert choice.choice == "Image B"


@pytest.mark.parametrize("content,message", [
    ("name,score\na.png,3\n", "no 'image' column (columns: name, score)"),
    ("image,quality\na.png,3\n", "no answer column"),
    ('image,score\n"a.png,3\n', "cannot parse"),
])
def test_malformed_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_for(path)


def test_missing_file_via_cli(tmp_path, capsys):
    assert main(["run", "--model", "precomputed", "--output", str(tmp_path)]) == 2
    assert "--model-path FILE" in capsys.readouterr().err
