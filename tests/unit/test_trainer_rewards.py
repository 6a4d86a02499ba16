"""Q-Insight's rewards on hand-written completions (REFERENCE §1): the answer read as the
released trainer reads it (the default) and by qbench's lenient parser (the option)."""
from __future__ import annotations

import pytest

from qbench.trainer.config import RewardSettings
from qbench.trainer.rewards import (
    comparison_reward,
    completion_text,
    degradation_class_reward,
    degradation_level_reward,
    format_reward,
    reward_functions,
    score_reward,
)


def chat(text: str) -> list[dict]:
    """A completion as TRL hands it over for conversational prompts."""
    return [{"role": "assistant", "content": text}]


def released(answer: str, think: str = "the image looks fine") -> str:
    """The layout the released format reward wants: a newline inside each tag."""
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


def inline(answer: str, think: str = "the image looks fine") -> str:
    """The layout the system prompt shows: no newlines."""
    return f"<think>{think}</think><answer>{answer}</answer>"


def score_of(text: str, truth: float, epsilon: float = 0.35, parser: str = "upstream") -> float:
    return score_reward([chat(text)], ["score"], [truth], epsilon=epsilon, parser=parser)[0]


def degradation_of(text: str, cls: str, level: str, parser: str = "upstream"
                   ) -> tuple[float, float]:
    args = ([chat(text)], ["degradation"], [cls], [level])
    return (degradation_class_reward(*args, parser=parser)[0],
            degradation_level_reward(*args, parser=parser)[0])


# --------------------------------------------------------------------------- completion text

def test_completion_text_reads_every_trl_completion_shape():
    assert completion_text("plain") == "plain"
    assert completion_text(chat("as message")) == "as message"
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                {"type": "image"}, {"type": "text", "text": "b"}]}]
    assert completion_text(blocks) == "ab"


# --------------------------------------------------------------------------- format

@pytest.mark.parametrize("text, strict, loose", [
    (released('{"rating": 3.5}'), 1.0, 1.0),
    # the released pattern's whitespace tolerance: spaces and extra newlines around the tags
    ('<think>  \nok\n  </think> \n\n<answer> \n{"rating": 3.5}  \n </answer>\n', 1.0, 1.0),
    ('<think>\nline one\nline two\n</think>\n<answer>\n{"rating":\n 3.5}\n</answer>', 1.0, 1.0),
    (inline('{"rating": 3.5}'), 0.0, 1.0),                      # the system prompt's own form
    ('<think>\nok\n</think><answer>\n{"rating": 3.5}\n</answer>', 0.0, 1.0),   # no newline
    ('<think>\nok\n</think>\n<answer>\n  {"rating": 3.5}\n</answer>', 0.0, 1.0),  # { indented
    (' ' + released('{"rating": 3.5}'), 0.0, 1.0),               # something before <think>
    ('{"rating": 3.5}', 0.0, 0.0),                               # no tags
    ('<answer>\n{"rating": 3.5}\n</answer>', 0.0, 0.0),          # no think
    (released('{"rating": {"value": 3.5}}'), 0.0, 0.0),          # nested braces
    (released("3.5"), 0.0, 0.0),                                  # not JSON-like
    (released('{"rating": 3.5}') + " trailing words", 0.0, 0.0),
])
def test_format_reward_strict_is_the_released_pattern_and_loose_the_option(text, strict, loose):
    assert format_reward([chat(text)], ["score"]) == [strict]       # the default: strict
    assert format_reward([chat(text)], ["score"], strict=False) == [loose]


def test_format_reward_comparison_answer_is_plain_text():
    assert format_reward([chat(released("Image A"))], ["comparison"]) == [1.0]
    assert format_reward([chat(released("Image A"))], ["degradation"]) == [0.0]
    assert format_reward([chat(inline("Image A"))], ["comparison"]) == [0.0]
    assert format_reward([chat(inline("Image A"))], ["comparison"], strict=False) == [1.0]


def test_format_reward_logs_both_strictness_rates():
    logged: dict[str, float] = {}
    texts = [inline('{"rating": 2}'), released('{"rating": 2}'), "nothing",
             inline('{"rating": 4}')]
    rewards = format_reward([chat(t) for t in texts], ["score"] * 4,
                            log_metric=logged.__setitem__)
    assert rewards == [0.0, 1.0, 0.0, 0.0]
    assert logged == {"format/loose_rate": 0.75, "format/strict_rate": 0.25}


# --------------------------------------------------------------------------- score

@pytest.mark.parametrize("parser", ["upstream", "evaluator"])
def test_score_reward_right_wrong_malformed(parser):
    assert score_of(released('{"rating": 3.80}'), 3.7, parser=parser) == 1.0
    assert score_of(released('{"rating": 1.5}'), 4.2, parser=parser) == 0.0
    assert score_of(released('{"rating": "good"}'), 3.0, parser=parser) == 0.0   # no number
    assert score_of("I cannot tell.", 3.0, parser=parser) == 0.0                  # no answer
    assert score_of(released('{"rating": 7.5}'), 4.9, parser=parser) == 0.0      # off the scale


def test_score_reward_threshold_is_strict_at_epsilon():
    assert score_of(released('{"rating": 3.34}'), 3.0) == 1.0           # 0.34 < 0.35
    assert score_of(released('{"rating": 2.66}'), 3.0) == 1.0           # below the truth too
    assert score_of(released('{"rating": 3.35}'), 3.0) == 0.0           # |Δ| = ε is not < ε
    assert score_of(released('{"rating": 3.40}'), 3.0, epsilon=0.5) == 1.0


@pytest.mark.parametrize("text, upstream, evaluator", [
    (released('{"rating": 3.5}'), 1.0, 1.0),
    (inline('{"rating": 3.5}'), 1.0, 1.0),              # the reading ignores the layout
    (released("{'rating': 3.5}"), 0.0, 1.0),             # single quotes: not the JSON key
    (released('{"rating": "3.5"}'), 0.0, 1.0),           # a quoted number
    (released('{"Rating": 3.5}'), 0.0, 1.0),             # another case
    (released('{"rating": +3.5}'), 0.0, 1.0),            # a sign
    (released("3.5"), 0.0, 1.0),                         # a bare number
    (released('{"rating": 3.5.1}'), 0.0, 1.0),           # float() fails; the first number
    ('<think>\nok\n</think>\n<answer>\n{"rating": 3.5}', 0.0, 1.0),  # unclosed <answer>
    # two answer blocks: the released reading takes the first, the evaluator the last
    (inline('{"rating": 3.5}') + '<answer>{"rating": 1.0}</answer>', 1.0, 0.0),
])
def test_score_answer_as_upstream_reads_it_and_the_lenient_option(text, upstream, evaluator):
    assert score_of(text, 3.5) == upstream
    assert score_of(text, 3.5, parser="evaluator") == evaluator


def test_score_reward_skips_other_kinds():
    rewards = score_reward([chat(released('{"rating": 3}'))] * 3,
                           ["score", "degradation", "comparison"], [3.0, None, None])
    assert rewards == [1.0, None, None]


# --------------------------------------------------------------------------- degradation

def test_degradation_right_class_and_level():
    text = released('{"distortion_class": "noise", "severity": "moderate"}')
    assert degradation_of(text, "noise", "moderate") == (1.0, 1.0)


def test_degradation_class_right_level_wrong():
    text = released('{"distortion_class": "blur", "severity": "slight"}')
    assert degradation_of(text, "blur", "serious") == (1.0, 0.0)


def test_degradation_class_wrong_gives_no_level_reward_even_if_level_matches():
    text = released('{"distortion_class": "darken", "severity": "obvious"}')
    assert degradation_of(text, "noise", "obvious") == (0.0, 0.0)


def test_degradation_null_answer():
    text = released('{"distortion_class": "null", "severity": "null"}')
    assert degradation_of(text, "null", "null") == (1.0, 1.0)
    assert degradation_of(text, "noise", "slight") == (0.0, 0.0)


@pytest.mark.parametrize("said, upstream, evaluator", [
    ("compression", (1.0, 1.0), (1.0, 1.0)),   # the question's word for the JPEG class
    ("JPEG", (0.0, 0.0), (1.0, 1.0)),          # the paper's word: not one the question lists
    ("jpeg compression", (0.0, 0.0), (1.0, 1.0)),
])
def test_degradation_class_words_exact_or_lenient(said, upstream, evaluator):
    text = released(f'{{"distortion_class": "{said}", "severity": "catastrophic"}}')
    assert degradation_of(text, "jpeg", "catastrophic") == upstream
    assert degradation_of(text, "jpeg", "catastrophic", parser="evaluator") == evaluator


@pytest.mark.parametrize("text, upstream, evaluator", [
    (released('{"distortion_class": "Noise", "severity": "Slight"}'), (0.0, 0.0), (1.0, 1.0)),
    (released('{"distortion_class": "noise", "severity": 1}'), (0.0, 0.0), (1.0, 1.0)),
    (released('{"severity": "slight", "distortion_class": "noise"}'), (0.0, 0.0), (1.0, 1.0)),
    (released('{"distortion_class": " noise ", "severity": "slight"}'), (1.0, 1.0), (1.0, 1.0)),
    (released("noise, slight"), (0.0, 0.0), (1.0, 1.0)),
])
def test_degradation_answer_as_upstream_reads_it(text, upstream, evaluator):
    """Quoted words in the order distortion_class, severity, compared exactly (the released
    regex); the evaluator's parser takes case, numbers, order and prose."""
    assert degradation_of(text, "noise", "slight") == upstream
    assert degradation_of(text, "noise", "slight", parser="evaluator") == evaluator


@pytest.mark.parametrize("text", [
    released('{"distortion_class": "noise", "severity": "very bad"}'),   # level off the scale
    released('{"distortion_class": "sparkles", "severity": "slight"}'),  # class off the list
    released("noise or blur, hard to say"),                               # ambiguous prose
    "",
])
@pytest.mark.parametrize("parser", ["upstream", "evaluator"])
def test_degradation_malformed_earns_nothing(text, parser):
    assert degradation_of(text, "noise", "slight", parser=parser) == (0.0, 0.0)


# --------------------------------------------------------------------------- comparison

@pytest.mark.parametrize("text, label, upstream, evaluator", [
    (released("Image A"), "Image A", 1.0, 1.0),
    (released("  Image B \n"), "Image B", 1.0, 1.0),       # stripped
    (released("Similar"), "Similar", 1.0, 1.0),
    (released("Image A"), "Image B", 0.0, 0.0),
    (released("image a"), "Image A", 0.0, 1.0),            # exact, or a lenient parse
    (released("Image A is better"), "Image A", 0.0, 1.0),
    ("Image A", "Image A", 0.0, 1.0),                       # untagged
])
def test_comparison_exact_match_or_lenient(text, label, upstream, evaluator):
    assert comparison_reward([chat(text)], ["comparison"], [label]) == [upstream]
    assert comparison_reward([chat(text)], ["comparison"], [label],
                             parser="evaluator") == [evaluator]


def test_comparison_skips_other_kinds():
    assert comparison_reward([chat(released("Image A"))], ["score"], [None]) == [None]


# --------------------------------------------------------------------------- combination

def weighted_total(text: str, row: dict, settings: RewardSettings) -> float:
    """The reward TRL forms: weighted sum of the per-function values, skipping None."""
    funcs, weights = reward_functions(settings, ["score", "degradation", "comparison"])
    columns = {key: [value] for key, value in row.items()}
    values = [f(completions=[chat(text)], **columns)[0] for f in funcs]
    return sum(w * v for w, v in zip(weights, values, strict=True) if v is not None)


DEGRADATION_ROW = {"kind": "degradation", "mos_norm": None, "distortion_class": "blur",
                   "severity": "serious", "choice": None}
SCORE_ROW = {"kind": "score", "mos_norm": 4.0, "distortion_class": None, "severity": None,
             "choice": None}


def test_total_reward_weights_follow_the_paper():
    settings = RewardSettings()
    both = released('{"distortion_class": "blur", "severity": "serious"}')
    class_only = released('{"distortion_class": "blur", "severity": "slight"}')
    assert weighted_total(both, DEGRADATION_ROW, settings) == pytest.approx(2.0)
    assert weighted_total(class_only, DEGRADATION_ROW, settings) == pytest.approx(1.25)
    assert weighted_total(released('{"rating": 4.1}'), SCORE_ROW, settings) == pytest.approx(2.0)
    # read, but not in the released layout: the score counts, the format does not
    assert weighted_total(inline('{"rating": 4.1}'), SCORE_ROW, settings) == pytest.approx(1.0)


def test_settings_choose_the_format_and_the_parser():
    loose_lenient = RewardSettings(format_strict=False, answer_parser="evaluator")
    text = inline("{'rating': 4.1}")
    assert weighted_total(text, SCORE_ROW, RewardSettings()) == 0.0
    assert weighted_total(text, SCORE_ROW, loose_lenient) == pytest.approx(2.0)


def test_reward_functions_cover_only_the_kinds_in_the_mix():
    from trl.trainer.utils import get_callable_name  # TRL logs each reward under this name

    funcs, weights = reward_functions(RewardSettings(class_weight=0.3), ["degradation"])
    assert [get_callable_name(f) for f in funcs] == [
        "format_reward", "degradation_class_reward", "degradation_level_reward"]
    assert weights == [1.0, 0.3, 0.75]
