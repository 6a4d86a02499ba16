import json

import pytest

from qbench import ModelConfig, ModelError, Sample
from qbench.baselines.precomputed import PrecomputedModel
from qbench.cli.main import main


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
    preds = model.predict([sample(f"/data/koniq/1024x768/{name}.jpg") for name in "abcde"], [])
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
    assert by_name.status == "missing"   # y.png's row says b/, the sample is in q/: no bare row


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
    ('image,score\n"a.png,3\n', "not a readable CSV"),
    ("image,score\na.png,3\n,4\n", "row 2: no image"),
])
def test_malformed_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_for(path)


def test_missing_file_via_cli(tmp_path, capsys):
    assert main(["run", "--model", "precomputed", "--output", str(tmp_path)]) == 2
    assert "--model-path FILE" in capsys.readouterr().err


def test_jsonl_errors_name_the_right_line(tmp_path):
    path = tmp_path / "p.jsonl"
    # a blank line and a U+2028 inside a string (a line break to str.splitlines) come first
    path.write_text('{"image": "a\u2028.png", "score": 1}\n\n{"image": "b.png", "score": 2}\n'
                    '{"image": "c.png", "score": 3,}\n', encoding="utf-8")
    with pytest.raises(ModelError) as caught:
        model_for(path)
    assert str(caught.value) == (f"precomputed: predictions file {path}: line 4: not valid JSON: "
                                 f"line 1, column 31: Expecting property name enclosed in double "
                                 f"quotes")


@pytest.mark.parametrize("content,message", [
    ('{"image": "a.png", "score": 1}\n[1, 2]\n', "line 2: expected an object (one per image), "
                                                  "got list"),
    ('{"image": "a.png", "score": 1, "score": 2}\n', "line 1: score: key given twice"),
    ('{"image": 7, "score": 1}\n', "line 1: image: should be text, got 7"),
    ('{"image": "a.png", "task": ["koniq"], "score": 1}\n', "line 1: task: should be text"),
    ('{"image": "a.png", "score": 1}\n{"score": 2}\n', "line 2: no image"),
    ('{"image": "a.png", "score": ' + "[" * 20_000 + "]" * 20_000 + "}\n",
     "line 1: not valid JSON: nested more than"),
])
def test_bad_jsonl_records_are_one_line_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(ModelError) as caught:
        model_for(path)
    assert str(caught.value).startswith(f"precomputed: predictions file {path}: {message}")
    assert "\n" not in str(caught.value)


def test_a_json_file_holding_an_array_is_read_as_an_array(tmp_path):
    rows = [{"image": "a.png", "score": 3.5}, {"image": "b.png", "score": 2}]
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(rows, indent=2))
    lines = tmp_path / "lines.json"   # one object per line, named .json: read as before
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for path in (pretty, lines):
        preds = model_for(path).predict([sample("/d/a.png"), sample("/d/b.png")], [])
        assert [p.score for p in preds] == [3.5, 2.0]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"image": "a.png", "score": 1},\n  {"image": "b.png" "score": 2}\n]')
    with pytest.raises(ModelError, match=r"broken.json: not valid JSON: line 3, column 21: "
                                         r"Expecting ',' delimiter"):
        model_for(broken)
    items = tmp_path / "items.json"
    items.write_text(json.dumps([rows[0], "b.png"]))
    with pytest.raises(ModelError, match=r"items.json: item 2: expected an object"):
        model_for(items)


def test_json_true_is_not_a_score(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"image": "a.png", "score": true}\n{"image": "b.png", "score": 1}\n'
                    '{"image": "c.png", "score": "2.5"}\n{"image": "d.png", "score": null}\n')
    flag, one, text, empty = model_for(path).predict(
        [sample(f"/d/{n}.png") for n in "abcd"], [])
    assert (flag.status, flag.score, flag.error) == ("unparsed", None,
                                                     "score True is not a number")
    assert (one.score, text.score) == (1.0, 2.5)
    assert empty.status == "unparsed"
    everything_true = tmp_path / "t.json"
    everything_true.write_text('[{"image": "a.png", "score": true}]')
    assert model_for(everything_true).predict([sample("/d/a.png")], [])[0].status == "unparsed"


def test_a_json_row_without_a_class_is_no_answer(tmp_path):
    """canonical_class reads None as 'no distortion': an absent key must not become one."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"image": "a.png", "severity": "slight"}\n'
                    '{"image": "b.png", "distortion_class": "blur"}\n'
                    '{"image": "c.png", "distortion_class": "null", "severity": "null"}\n')
    a, b, c = model_for(path).predict([sample(f"/d/{n}.png", "degradation", "dq495k")
                                       for n in "abc"], [])
    assert (a.status, b.status) == ("unparsed", "unparsed")
    assert (c.status, c.distortion_class, c.severity) == ("ok", "null", "null")


def test_binary_or_huge_values_are_named_in_one_short_line(tmp_path):
    binary = tmp_path / "p.csv"
    binary.write_bytes(b"image,score\na.png,\x00\x01\n")
    with pytest.raises(ModelError, match=r"^precomputed: predictions file .*p.csv: not a text "
                                         r"file \(byte 18 is NUL\): binary\?$"):
        model_for(binary)
    twice = tmp_path / "twice.jsonl"
    huge = "9" * 100_000
    twice.write_text(json.dumps({"image": "a.png", "score": 1}) + "\n" +
                     json.dumps({"image": "a.png", "score": huge}) + "\n")
    with pytest.raises(ModelError, match="gives a.png two different answers") as caught:
        model_for(twice)
    assert len(str(caught.value)) < 300
    long_score = tmp_path / "long.jsonl"
    long_score.write_text(json.dumps({"image": "a.png", "score": "x" * 100_000}) + "\n")
    (pred,) = model_for(long_score).predict([sample("/d/a.png")], [])
    assert pred.status == "unparsed" and len(pred.error) < 120
