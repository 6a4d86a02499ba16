"""Q-Insight's rewards (REFERENCE §1) as plain TRL reward functions.

Each takes TRL's keyword arguments (`completions` plus the dataset columns `kind`, `mos_norm`,
`distortion_class`, `severity`, `choice`) and returns one value per completion, or None where
the reward does not apply to that sample's kind: TRL then leaves it out of that reward's logged
mean, so `rewards/score_reward/mean` is the score hit rate over score samples only.
The weights (α1, α2, …) are TRL `reward_weights`, so the logged components stay 0/1 rates and
the summed reward is r_fmt + r_scr, or r_fmt + α1·r_deg + α2·r_lev, or r_fmt + r_cmp.

Answers are read one of two ways (`rewards.answer_parser`):
  upstream   as the released trainer reads them (bytedance/Q-Insight, src/open-r1-multimodal/
             src/open_r1/qinsight_multi_task.py:296-335, qinsight_comparison.py:238-249): the
             first <answer>…</answer> block; `"rating": <digits and dots>`; `"distortion_class":
             "<word>"` then `"severity": "<word>"`, both words exactly as the question lists
             them; a comparison answer exactly the label.
  evaluator  qbench.core.protocol's lenient parser, the one `qbench run` scores with.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from qbench.core.protocol import LEVELS, format_ok, parse_answer
from qbench.trainer.config import RewardSettings

Reward = float | None

_FIRST_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)
_RATING_RE = re.compile(r'"rating"\s*:\s*([\d.]+)')
_DEGRADATION_RE = re.compile(
    r'"distortion_class"\s*:\s*"([^"]+)".*?"severity"\s*:\s*"([^"]+)"', re.S)
# The class words of the degradation question, mapped to the canonical classes the datasets are
# read into (the question's "compression" is the class the paper calls JPEG). The released
# trainer compares the answer with its training meta's word; that meta file (train_dist.json)
# is not in the public repository's stored history, so the question's words are the reference.
QUESTION_CLASSES = {"noise": "noise", "compression": "jpeg", "blur": "blur", "darken": "darken",
                    "null": "null"}
QUESTION_LEVELS = frozenset(LEVELS) | {"null"}


def completion_text(completion: Any) -> str:
    """The generated text of one TRL completion: a string, or (conversational) a list of
    assistant messages whose content is a string or a list of text blocks."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(block.get("text") or "" for block in content
                         if block.get("type") == "text")
    return "".join(parts)


def first_answer(text: str) -> str | None:
    match = _FIRST_ANSWER_RE.search(text)
    return match.group(1).strip() if match else None


def read_rating(text: str, parser: str) -> float | None:
    if parser == "evaluator":
        answer = parse_answer(text, "score")
        return answer.score if answer.ok else None
    region = first_answer(text)
    match = _RATING_RE.search(region) if region is not None else None
    try:
        return float(match.group(1)) if match else None
    except ValueError:  # "3.5.1": the released code's float() fails there too
        return None


def read_degradation(text: str, parser: str) -> tuple[str, str] | None:
    """(canonical class, severity word) of an answer, or None when it gives none."""
    if parser == "evaluator":
        answer = parse_answer(text, "degradation")
        cls, level = answer.distortion_class, answer.severity
        return (cls, level) if answer.ok and cls is not None and level is not None else None
    region = first_answer(text)
    match = _DEGRADATION_RE.search(region) if region is not None else None
    if match is None:
        return None
    said_class, said_level = match.group(1).strip(), match.group(2).strip()
    if said_class not in QUESTION_CLASSES or said_level not in QUESTION_LEVELS:
        return None
    return QUESTION_CLASSES[said_class], said_level


def read_choice(text: str, parser: str) -> str | None:
    if parser == "evaluator":
        answer = parse_answer(text, "comparison")
        return answer.choice if answer.ok else None
    return first_answer(text)


def format_reward(completions: Sequence[Any], kind: Sequence[str], *, strict: bool = True,
                  log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[Reward]:
    """1 when the response is <think>…</think><answer>…</answer> (JSON-like answer for score and
    degradation). Both strictness rates are logged each step, whichever one is rewarded, so a
    run shows when the newline-strict pattern is what holds the format reward down."""
    texts = [completion_text(c) for c in completions]
    json_answer = [k != "comparison" for k in kind]
    pairs = list(zip(texts, json_answer, strict=True))
    loose = [format_ok(t, strict=False, json_answer=j) for t, j in pairs]
    tight = [format_ok(t, strict=True, json_answer=j) for t, j in pairs]
    if log_metric is not None and texts:
        log_metric("format/loose_rate", sum(loose) / len(texts))
        log_metric("format/strict_rate", sum(tight) / len(texts))
    return [float(ok) for ok in (tight if strict else loose)]


def score_reward(completions: Sequence[Any], kind: Sequence[str], mos_norm: Sequence[Any], *,
                 epsilon: float = 0.35, parser: str = "upstream", **_: Any) -> list[Reward]:
    """1 when |predicted rating − MOS on [1, 5]| < epsilon."""
    out: list[Reward] = []
    for completion, k, truth in zip(completions, kind, mos_norm, strict=True):
        if k != "score":
            out.append(None)
            continue
        rating = read_rating(completion_text(completion), parser)
        out.append(float(rating is not None and abs(rating - float(truth)) < epsilon))
    return out


def _degradation_hits(completions: Sequence[Any], kind: Sequence[str],
                      distortion_class: Sequence[Any], severity: Sequence[Any], parser: str
                      ) -> list[tuple[bool, bool] | None]:
    """(class right, class and level right) per degradation sample, None for other kinds."""
    out: list[tuple[bool, bool] | None] = []
    rows = zip(completions, kind, distortion_class, severity, strict=True)
    for completion, k, cls, level in rows:
        if k != "degradation":
            out.append(None)
            continue
        said = read_degradation(completion_text(completion), parser)
        if said is None:
            out.append((False, False))
            continue
        class_right = said[0] == cls
        out.append((class_right, class_right and said[1] == level))
    return out


def degradation_class_reward(completions: Sequence[Any], kind: Sequence[str],
                             distortion_class: Sequence[Any], severity: Sequence[Any], *,
                             parser: str = "upstream", **_: Any) -> list[Reward]:
    """r_deg: 1 when the distortion class is right."""
    hits = _degradation_hits(completions, kind, distortion_class, severity, parser)
    return [None if h is None else float(h[0]) for h in hits]


def degradation_level_reward(completions: Sequence[Any], kind: Sequence[str],
                             distortion_class: Sequence[Any], severity: Sequence[Any], *,
                             parser: str = "upstream", **_: Any) -> list[Reward]:
    """r_lev: 1 when the class AND the severity level are right."""
    hits = _degradation_hits(completions, kind, distortion_class, severity, parser)
    return [None if h is None else float(h[1]) for h in hits]


def comparison_reward(completions: Sequence[Any], kind: Sequence[str], choice: Sequence[Any], *,
                      parser: str = "upstream", **_: Any) -> list[Reward]:
    """1 when the answer is the label (Image A | Image B | Similar)."""
    out: list[Reward] = []
    for completion, k, label in zip(completions, kind, choice, strict=True):
        if k != "comparison":
            out.append(None)
            continue
        out.append(float(read_choice(completion_text(completion), parser) == label))
    return out


def reward_functions(settings: RewardSettings, kinds: Sequence[str]
                     ) -> tuple[list[Callable[..., list[Reward]]], list[float]]:
    """The reward functions a mix of `kinds` needs, and their TRL reward_weights. Settings are
    bound with functools.partial (picklable; TRL logs them under the function's name)."""
    parser = settings.answer_parser
    funcs: list[Callable[..., list[Reward]]] = [
        functools.partial(format_reward, strict=settings.format_strict)]
    weights = [settings.format_weight]
    if "score" in kinds:
        funcs.append(functools.partial(score_reward, epsilon=settings.score_epsilon,
                                       parser=parser))
        weights.append(settings.score_weight)
    if "degradation" in kinds:
        funcs += [functools.partial(degradation_class_reward, parser=parser),
                  functools.partial(degradation_level_reward, parser=parser)]
        weights += [settings.class_weight, settings.level_weight]
    if "comparison" in kinds:
        funcs.append(functools.partial(comparison_reward, parser=parser))
        weights.append(settings.comparison_weight)
    return funcs, weights
