"""Q-Insight rewards on hand-written completions (REFERENCE §1)."""
from __future__ import annotations

import pytest

from qbench.trainer.config import RewardSettings
from qbench.trainer.rewards import (comparison_reward, completion_text, degradation_class_reward,
                                    degradation_level_reward, format_reward, reward_functions,
                                    score_reward)


def chat(text: str) -> list[dict]:
    """A completion as TRL hands it over for conversational prompts."""
    return [{"role": "assistant", "content": text}]


def tagged(answer: str, think: str = "the image looks fine") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def score_of(text: str, truth: float, epsilon: float = 0.35) -> float | None:
    return score_reward([chat(text)], ["score"], [truth], epsilon=epsilon)[0]


def degradation_of(text: str, cls: str, level: str) -> tuple[float, float]:
    args = ([chat(text)], ["degradation"], [cls], [level])
    return degradation_class_reward(*args)[0], degradation_level_reward(*args)[0]


# --------------------------------------------------------------------------- completion text

def test_completion_text_reads_every_trl_completion_shape():
    assert completion_text("plain") == "plain"
    assert completion_text(chat("as message")) == "as message"
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                {"type": "image"}, {"type": "text", "text": "b"}]}]
    assert completion_text(blocks) == "ab"


# --------------------------------------------------------------------------- format

@pytest.mark.parametrize("text, loose, strict", [
    (tagged('{"rating": 3.5}'), 1.0, 0.0),                                   # prompt's own form
    ('<think>\nok\n</think>\n<answer>\n{"rating": 3.5}\n</answer>', 1.0, 1.0),  # released regex
    ('{"rating": 3.5}', 0.0, 0.0),                                           # no tags
    ('<answer>{"rating": 3.5}</answer>', 0.0, 0.0),                          # no think
    (tagged('{"rating": {"value": 3.5}}'), 0.0, 0.0),                        # nested braces
    (tagged("3.5"), 0.0, 0.0),                                               # not JSON-like
    (tagged('{"rating": 3.5}') + " trailing words", 0.0, 0.0),
])
def test_format_reward_loose_and_strict(text, loose, strict):
    assert format_reward([chat(text)], ["score"]) == [loose]
    assert format_reward([chat(text)], ["score"], strict=True) == [strict]


def test_format_reward_comparison_answer_is_plain_text():
    assert format_reward([chat(tagged("Image A"))], ["comparison"]) == [1.0]
    assert format_reward([chat(tagged("Image A"))], ["degradation"]) == [0.0]


def test_format_reward_logs_both_strictness_rates():
    logged: dict[str, float] = {}
    texts = [tagged('{"rating": 2}'), '<think>\nx\n</think>\n<answer>\n{"rating": 2}\n</answer>',
             "nothing", tagged('{"rating": 4}')]
    rewards = format_reward([chat(t) for t in texts], ["score"] * 4, strict=True,
                            log_metric=logged.__setitem__)
    assert rewards == [0.0, 1.0, 0.0, 0.0]
    assert logged == {"format/loose_rate": 0.75, "format/strict_rate": 0.25}


# --------------------------------------------------------------------------- score

def test_score_reward_right_wrong_malformed():
    assert score_of(tagged('{"rating": 3.80}'), 3.7) == 1.0
    assert score_of(tagged('{"rating": 1.5}'), 4.2) == 0.0
    assert score_of(tagged('{"rating": "good"}'), 3.0) == 0.0        # no number
    assert score_of("I cannot tell.", 3.0) == 0.0                     # no answer at all
    assert score_of(tagged('{"rating": 7.5}'), 4.9) == 0.0            # off the [1, 5] scale


def test_score_reward_threshold_is_strict_at_epsilon():
    assert score_of(tagged('{"rating": 3.34}'), 3.0) == 1.0           # 0.34 < 0.35
    assert score_of(tagged('{"rating": 2.66}'), 3.0) == 1.0           # below the truth too
    assert score_of(tagged('{"rating": 3.35}'), 3.0) == 0.0           # |Δ| = ε is not < ε
    assert score_of(tagged('{"rating": 3.40}'), 3.0) == 0.0
    assert score_of(tagged('{"rating": 3.40}'), 3.0, epsilon=0.5) == 1.0


def test_score_reward_skips_other_kinds():
    rewards = score_reward([chat(tagged('{"rating": 3}'))] * 3,
                           ["score", "degradation", "comparison"], [3.0, None, None])
    assert rewards == [1.0, None, None]


# --------------------------------------------------------------------------- degradation

def test_degradation_right_class_and_level():
    text = tagged('{"distortion_class": "noise", "severity": "moderate"}')
    assert degradation_of(text, "noise", "moderate") == (1.0, 1.0)


def test_degradation_class_right_level_wrong():
    text = tagged('{"distortion_class": "blur", "severity": "slight"}')
    assert degradation_of(text, "blur", "serious") == (1.0, 0.0)


def test_degradation_class_wrong_gives_no_level_reward_even_if_level_matches():
    text = tagged('{"distortion_class": "darken", "severity": "obvious"}')
    assert degradation_of(text, "noise", "obvious") == (0.0, 0.0)


@pytest.mark.parametrize("said", ["compression", "JPEG", "jpeg compression"])
def test_degradation_jpeg_and_compression_are_one_class(said):
    text = tagged(f'{{"distortion_class": "{said}", "severity": "catastrophic"}}')
    assert degradation_of(text, "jpeg", "catastrophic") == (1.0, 1.0)


def test_degradation_null_answer():
    text = tagged('{"distortion_class": "null", "severity": "null"}')
    assert degradation_of(text, "null", "null") == (1.0, 1.0)
    assert degradation_of(text, "noise", "slight") == (0.0, 0.0)


@pytest.mark.parametrize("text", [
    tagged('{"distortion_class": "noise", "severity": "very bad"}'),   # level outside the scale
    tagged('{"distortion_class": "sparkles", "severity": "slight"}'),  # class outside the list
    tagged("noise or blur, hard to say"),                               # ambiguous prose
    "",
])
def test_degradation_malformed_earns_nothing(text):
    assert degradation_of(text, "noise", "slight") == (0.0, 0.0)


# --------------------------------------------------------------------------- comparison

@pytest.mark.parametrize("text, label, expected", [
    (tagged("Image A"), "Image A", 1.0),
    (tagged("  Image B \n"), "Image B", 1.0),       # stripped
    (tagged("Similar"), "Similar", 1.0),
    (tagged("Image A"), "Image B", 0.0),
    (tagged("image a"), "Image A", 0.0),            # exact match, not a lenient parse
    (tagged("Image A is better"), "Image A", 0.0),
    ("Image A", "Image A", 0.0),                     # untagged
])
def test_comparison_exact_match(text, label, expected):
    assert comparison_reward([chat(text)], ["comparison"], [label]) == [expected]


def test_comparison_skips_other_kinds():
    assert comparison_reward([chat(tagged("Image A"))], ["score"], [None]) == [None]


# --------------------------------------------------------------------------- combination

def weighted_total(text: str, row: dict, settings: RewardSettings) -> float:
    """The reward TRL forms: weighted sum of the per-function values, skipping None."""
    funcs, weights = reward_functions(settings, ["score", "degradation", "comparison"])
    columns = {key: [value] for key, value in row.items()}
    values = [f(completions=[chat(text)], **columns)[0] for f in funcs]
    return sum(w * v for w, v in zip(weights, values, strict=True) if v is not None)


DEGRADATION_ROW = {"kind": "degradation", "mos_norm": None, "distortion_class": "blur",
                   "severity": "serious", "choice": None}


def test_total_reward_weights_follow_the_paper():
    settings = RewardSettings()
    both = tagged('{"distortion_class": "blur", "severity": "serious"}')
    class_only = tagged('{"distortion_class": "blur", "severity": "slight"}')
    assert weighted_total(both, DEGRADATION_ROW, settings) == pytest.approx(2.0)
    assert weighted_total(class_only, DEGRADATION_ROW, settings) == pytest.approx(1.25)
    score_row = {"kind": "score", "mos_norm": 4.0, "distortion_class": None, "severity": None,
                 "choice": None}
    assert weighted_total(tagged('{"rating": 4.1}'), score_row, settings) == pytest.approx(2.0)
    assert weighted_total("4.1", score_row, settings) == pytest.approx(1.0)  # score, no format


def test_reward_functions_cover_only_the_kinds_in_the_mix():
    from trl.trainer.utils import get_callable_name  # TRL logs each reward under this name

    funcs, weights = reward_functions(RewardSettings(class_weight=0.3), ["degradation"])
    assert [get_callable_name(f) for f in funcs] == [
        "format_reward", "degradation_class_reward", "degradation_level_reward"]
    assert weights == [1.0, 0.3, 0.75]
    funcs, _ = reward_functions(RewardSettings(), ["score", "comparison"])
    assert [get_callable_name(f) for f in funcs] == [
        "format_reward", "score_reward", "comparison_reward"]


def test_strict_setting_reaches_the_format_reward():
    funcs, _ = reward_functions(RewardSettings(format_strict=True), ["score"])
    loose_only = chat(tagged('{"rating": 3}'))
    assert funcs[0](completions=[loose_only], kind=["score"]) == [0.0]
    assert funcs[1](completions=[loose_only], kind=["score"], mos_norm=[3.0]) == [1.0]
