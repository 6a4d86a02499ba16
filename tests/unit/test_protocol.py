import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbench.core.protocol import (
    CLASSES,
    LEVELS,
    build_messages,
    canonical_class,
    format_ok,
    parse_answer,
)

WELL_FORMED = '<think>Sharp edges, little noise.</think><answer>{"rating": 3.87}</answer>'


@pytest.mark.parametrize("text,expected", [
    (WELL_FORMED, 3.87),
    ("<think>x</think>\n<answer>\n{'rating': 4.2}\n</answer>", 4.2),      # single quotes
    ('<think>x</think><answer>{"rating": "2.5"}</answer> trailing text', 2.5),
    ("<answer>{\"rating\": 4.10", 4.10),                                  # unclosed tag and brace
    ("The image is decent. I'd give it 4.2/5.", 4.2),                       # no tags, scale written
    ("rating: 1.5", 1.5),
    ("<think>three reasons: 1, 2, 3</think><answer>3.25</answer>", 3.25),  # bare number in answer
    ("3", 3.0),
    ('{"rating": 5}', 5.0),
])
def test_score_parsing(text, expected):
    answer = parse_answer(text, "score")
    assert answer.ok, answer.error
    assert answer.score == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "", "I cannot rate this image.", '<answer>{"rating": 7.5}</answer>',
    "<answer>between 3 and 4</answer>", '<answer>{"rating": "good"}</answer>',
    "The photo has 3 people and 2 dogs.",  # numbers in prose without tags are not a rating
])
def test_score_failures_are_reported_not_guessed(text):
    answer = parse_answer(text, "score")
    assert not answer.ok and answer.score is None and answer.error


@pytest.mark.parametrize("text,cls,level", [
    ('<think>grainy</think><answer>{"distortion_class": "noise", "severity": "obvious"}</answer>',
     "noise", "obvious"),
    ("<answer>{'distortion_class': 'compression', 'severity': 'serious'}</answer>", "jpeg", "serious"),
    ('<answer>{"distortion_class": "JPEG", "severity": "slight"}</answer>', "jpeg", "slight"),
    ('<answer>{"distortion_class": "null", "severity": "null"}</answer>', "null", "null"),
    ('<answer>{"distortion_class": null, "severity": null}</answer>', "null", "null"),
    ("<answer>The image shows moderate blur.</answer>", "blur", "moderate"),
    ('<answer>{"distortion_class": "darken", "severity": 5}</answer>', "darken", "catastrophic"),
])
def test_degradation_parsing(text, cls, level):
    answer = parse_answer(text, "degradation")
    assert answer.ok, answer.error
    assert (answer.distortion_class, answer.severity) == (cls, level)


@pytest.mark.parametrize("text", [
    '<answer>{"distortion_class": "rain", "severity": "slight"}</answer>',
    '<answer>{"distortion_class": "noise", "severity": "huge"}</answer>',
    "<answer>noise or blur, hard to say</answer>",
    "no idea",
])
def test_degradation_failures(text):
    assert not parse_answer(text, "degradation").ok


@pytest.mark.parametrize("text,choice", [
    ("<think>A keeps the texture</think><answer>Image A</answer>", "Image A"),
    ("<answer> image b </answer>", "Image B"),
    ("<answer>Similar</answer>", "Similar"),
    ("<answer>Image A</answer>\nextra", "Image A"),
])
def test_choice_parsing(text, choice):
    assert parse_answer(text, "comparison").choice == choice


def test_ambiguous_choice_fails():
    assert not parse_answer("<answer>Image A or Image B</answer>", "comparison").ok


def test_class_aliases_share_one_name():
    assert canonical_class("JPEG") == canonical_class("compression") == "jpeg"
    assert set(CLASSES) == {"noise", "blur", "jpeg", "darken", "null"}


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_parser_never_raises_on_arbitrary_text(text):
    for kind in ("score", "degradation", "comparison"):
        answer = parse_answer(text, kind)
        assert answer.ok == (answer.error is None)


@given(st.text(alphabet=st.sampled_from(list('<>/{}"\':answerthink ratingdistortion_class0123456789.,\n'))))
@settings(max_examples=300, deadline=None)
def test_parser_never_raises_on_tag_soup(text):
    for kind in ("score", "degradation", "comparison"):
        answer = parse_answer(text, kind)
        if answer.ok and kind == "score":
            assert 1 <= answer.score <= 5
        if answer.ok and kind == "degradation":
            assert answer.distortion_class in CLASSES and answer.severity in LEVELS + ("null",)


@given(st.floats(1, 5), st.text(alphabet=st.characters(blacklist_characters="<>{}0123456789"), max_size=40))
@settings(max_examples=200, deadline=None)
def test_rating_survives_reasoning_text(value, reasoning):
    text = f"<think>{reasoning}</think><answer>{{\"rating\": {value:.2f}}}</answer>"
    assert parse_answer(text, "score").score == pytest.approx(round(value, 2))


def test_parser_rejects_non_text():
    assert not parse_answer(None, "score").ok


def test_format_check_strict_and_loose():
    assert format_ok(WELL_FORMED)
    assert not format_ok(WELL_FORMED, strict=True)  # the released regex wants newlines
    strict = '<think>\nok\n</think>\n<answer>\n{"rating": 3.0}\n</answer>'
    assert format_ok(strict, strict=True) and format_ok(strict)
    assert not format_ok('<think>x</think><answer>{"a": {"b": 1}}</answer>')  # nested braces
    assert not format_ok('<answer>{"rating": 3}</answer>')                  # no reasoning
    assert not format_ok("<think>x</think><answer>Image A</answer>")
    assert format_ok("<think>x</think><answer>Image A</answer>", json_answer=False)


@pytest.mark.parametrize("text, expected", [
    ('<think>\nok\n</think>\n<answer>\n{"rating": 3.0}\n</answer>', True),
    # whitespace the released pattern tolerates: around each tag, after the answer
    ('<think> \t\nok\n  </think>  \n<answer>  \n{"rating": 3.0}  \n  </answer>  \n', True),
    ('<think>\n\n\nok\n\n</think>\n\n<answer>\n\n{"rating": 3.0}\n\n</answer>', True),
    ('<think>\na\nb\n</think>\n<answer>\n{"rating":\n3.0}\n</answer>', True),
    ('<think>\n\n</think>\n<answer>\n{}\n</answer>', True),   # empty reasoning, empty object
    # what it does not tolerate
    ('<think>ok</think>\n<answer>\n{"rating": 3.0}\n</answer>', False),    # no newline in think
    ('<think>\nok\n</think> <answer>\n{"rating": 3.0}\n</answer>', False),  # same line
    ('<think>\nok\n</think>\n <answer>\n{"rating": 3.0}\n</answer>', False),  # space before
    ('<think>\nok\n</think>\n<answer>\n {"rating": 3.0}\n</answer>', False),  # { indented
    ('<think>\nok\n</think>\n<answer>\n{"rating": 3.0}</answer>', False),    # no newline after
    ('\n<think>\nok\n</think>\n<answer>\n{"rating": 3.0}\n</answer>', False),  # before <think>
    ('<think>\nok\n</think>\n<answer>\n{"a": {"b": 1}}\n</answer>', False),   # nested braces
    ('<think>\nok\n</think>\n<answer>\n{"rating": 3.0} x\n</answer>', False),  # text after }
])
def test_strict_format_is_the_released_pattern(text, expected):
    """bytedance/Q-Insight qinsight_multi_task.py:378-389, applied with re.fullmatch."""
    assert format_ok(text, strict=True) is expected


@pytest.mark.parametrize("text, expected", [
    ('<think>\nA is sharper\n</think>\n<answer>\nImage A\n</answer>', True),
    ('<think>\nx\n</think>\n<answer>\n\n</answer>', True),     # the released regex allows it
    ('<think>\nx\n</think>\n<answer>\nImage A</answer>', False),
    ('<think>x</think><answer>Image A</answer>', False),
])
def test_strict_plain_format_is_the_released_comparison_pattern(text, expected):
    """bytedance/Q-Insight qinsight_comparison.py:282-294."""
    assert format_ok(text, strict=True, json_answer=False) is expected


def test_messages_carry_images_in_protocol_order():
    score = build_messages("score")
    assert score[0]["role"] == "system"
    assert [c["type"] for c in score[1]["content"]] == ["image", "text"]
    assert [c["type"] for c in build_messages("score", image_first=False)[1]["content"]] == ["text", "image"]
    comparison = build_messages("comparison")[1]["content"]
    assert [c["type"] for c in comparison].count("image") == 3
    assert comparison[2]["text"] == "Image A:"
