"""Q-Insight's rewards (REFERENCE §1) as plain TRL reward functions.

Each takes TRL's keyword arguments (`completions` plus the dataset columns `kind`, `mos_norm`,
`distortion_class`, `severity`, `choice`) and returns one value per completion, or None where
the reward does not apply to that sample's kind: TRL then leaves it out of that reward's logged
mean, so `rewards/score_reward/mean` is the score hit rate over score samples only.
The weights (α1, α2, …) are TRL `reward_weights`, so the logged components stay 0/1 rates and
the summed reward is r_fmt + r_scr, or r_fmt + α1·r_deg + α2·r_lev, or r_fmt + r_cmp.

Answers are read with the evaluator's own parser (qbench.protocol): an answer the harness would
count as unparsed earns nothing here either.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from qbench.protocol import answer_region, format_ok, parse_answer

from .config import RewardSettings

Reward = float | None


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


def format_reward(completions: Sequence[Any], kind: Sequence[str], *, strict: bool = False,
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
                 epsilon: float = 0.35, **_: Any) -> list[Reward]:
    """1 when |predicted rating − MOS on [1, 5]| < epsilon."""
    out: list[Reward] = []
    for completion, k, truth in zip(completions, kind, mos_norm, strict=True):
        if k != "score":
            out.append(None)
            continue
        answer = parse_answer(completion_text(completion), "score")
        out.append(float(answer.ok and abs(answer.score - float(truth)) < epsilon))
    return out


def _degradation_hits(completions: Sequence[Any], kind: Sequence[str],
                      distortion_class: Sequence[Any], severity: Sequence[Any]
                      ) -> list[tuple[bool, bool] | None]:
    """(class right, class and level right) per degradation sample, None for other kinds."""
    out: list[tuple[bool, bool] | None] = []
    rows = zip(completions, kind, distortion_class, severity, strict=True)
    for completion, k, cls, level in rows:
        if k != "degradation":
            out.append(None)
            continue
        answer = parse_answer(completion_text(completion), "degradation")
        class_right = answer.ok and answer.distortion_class == cls
        out.append((class_right, class_right and answer.severity == level))
    return out


def degradation_class_reward(completions: Sequence[Any], kind: Sequence[str],
                             distortion_class: Sequence[Any], severity: Sequence[Any],
                             **_: Any) -> list[Reward]:
    """r_deg: 1 when the distortion class is right ("JPEG" and "compression" are one class)."""
    hits = _degradation_hits(completions, kind, distortion_class, severity)
    return [None if h is None else float(h[0]) for h in hits]


def degradation_level_reward(completions: Sequence[Any], kind: Sequence[str],
                             distortion_class: Sequence[Any], severity: Sequence[Any],
                             **_: Any) -> list[Reward]:
    """r_lev: 1 when the class AND the severity level are right."""
    hits = _degradation_hits(completions, kind, distortion_class, severity)
    return [None if h is None else float(h[1]) for h in hits]


def comparison_reward(completions: Sequence[Any], kind: Sequence[str], choice: Sequence[Any],
                      **_: Any) -> list[Reward]:
    """1 when the tagged answer, stripped, is exactly the label (Image A | Image B | Similar)."""
    out: list[Reward] = []
    for completion, k, label in zip(completions, kind, choice, strict=True):
        if k != "comparison":
            out.append(None)
            continue
        region, tagged = answer_region(completion_text(completion))
        out.append(float(tagged and region == label))
    return out


def reward_functions(settings: RewardSettings, kinds: Sequence[str]
                     ) -> tuple[list[Callable[..., list[Reward]]], list[float]]:
    """The reward functions a mix of `kinds` needs, and their TRL reward_weights. Settings are
    bound with functools.partial (picklable; TRL logs them under the function's name)."""
    funcs: list[Callable[..., list[Reward]]] = [
        functools.partial(format_reward, strict=settings.format_strict)]
    weights = [settings.format_weight]
    if "score" in kinds:
        funcs.append(functools.partial(score_reward, epsilon=settings.score_epsilon))
        weights.append(settings.score_weight)
    if "degradation" in kinds:
        funcs += [degradation_class_reward, degradation_level_reward]
        weights += [settings.class_weight, settings.level_weight]
    if "comparison" in kinds:
        funcs.append(comparison_reward)
        weights.append(settings.comparison_weight)
    return funcs, weights
