"""The Q-Insight protocol: prompts, answer vocabularies, the answer parser and the format check.

Evaluation adapters and the GRPO trainer import this one module, so that the words a model is
trained on are the words it is evaluated with. Prompt strings are quoted exactly from the
released protocol (REFERENCE §1): released weights were trained on them.

The parser never raises: every function returns an `Answer` whose `error` says why it failed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think><answer> answer here </answer>"
)

SCORE_QUESTION = (
    "What is your overall rating on the quality of this picture? The rating should be a float "
    "between 1 and 5, rounded to two decimal places, with 1 representing very poor quality and 5 "
    "representing excellent quality. Return the final answer in JSON format with the following "
    'keys: "rating": The score.'
)

DEGRADATION_QUESTION = (
    "Analyze the given image and determine if it contains any of the following distortions: "
    '"noise", "compression", "blur", or "darken". If a distortion is present, classify its '
    'severity as "slight", "moderate", "obvious", "serious", or "catastrophic". Return the result '
    'in JSON format with the following keys: "distortion_class": The detected distortion (or '
    '"null" if none). and "severity": The severity level (or "null" if none).'
)

COMPARISON_LEAD = "Given a low-quality reference image and two enhanced outputs. Reference Image:"
COMPARISON_QUESTION = (
    "Decide which enhanced image is superior or if they are comparable. Evaluate based on: "
    "1) fidelity and consistency with the reference image; 2) overall perceptual quality. "
    "Return **exactly one** of: Image A, Image B, or Similar."
)

# Canonical vocabularies. "jpeg" is the one name for the class the paper calls "JPEG" and the
# prompt calls "compression".
CLASSES: tuple[str, ...] = ("noise", "blur", "jpeg", "darken", "null")
DISTORTIONS: tuple[str, ...] = CLASSES[:-1]
LEVELS: tuple[str, ...] = ("slight", "moderate", "obvious", "serious", "catastrophic")
CHOICES: tuple[str, ...] = ("Image A", "Image B", "Similar")
CLASS_DISPLAY = {"noise": "noise", "blur": "blur", "jpeg": "JPEG", "darken": "darken",
                 "null": "null"}

_CLASS_ALIASES = {
    "noise": "noise", "noisy": "noise", "gaussian noise": "noise",
    "blur": "blur", "blurry": "blur", "blurred": "blur", "blurring": "blur",
    "gaussian blur": "blur",
    "jpeg": "jpeg", "jpg": "jpeg", "compression": "jpeg", "jpeg compression": "jpeg",
    "compressed": "jpeg", "compression artifacts": "jpeg",
    "darken": "darken", "dark": "darken", "darkened": "darken", "darkening": "darken",
    "low light": "darken", "underexposure": "darken",
    "null": "null", "none": "null", "no": "null", "no distortion": "null", "clean": "null",
    "": "null",
}
_LEVEL_ALIASES = ({name: name for name in LEVELS}
                  | {str(i + 1): name for i, name in enumerate(LEVELS)})
_NULL_WORDS = {"null", "none", "no", "n/a", "na", "", "0"}


def canonical_class(word: Any) -> str | None:
    """Map a class word (any spelling the protocol or the datasets use) to CLASSES, else None."""
    if word is None:
        return "null"
    return _CLASS_ALIASES.get(re.sub(r"[\s_\-]+", " ", str(word)).strip().lower())


def canonical_level(word: Any) -> str | None:
    """Map a severity (name, 1-5 or 0/none for no distortion) to LEVELS or "null", else None."""
    if word is None:
        return "null"
    key = str(word).strip().lower()
    if key.endswith(".0"):
        key = key[:-2]
    if key in _NULL_WORDS:
        return "null"
    return _LEVEL_ALIASES.get(key)


def question(kind: str) -> str:
    return {"score": SCORE_QUESTION, "degradation": DEGRADATION_QUESTION,
            "comparison": COMPARISON_QUESTION}[kind]


def build_messages(kind: str, *, image_first: bool = True, system: bool = True) -> list[dict]:
    """Chat messages in the Hugging Face multimodal format, images as `{"type": "image"}`
    placeholders (the caller hands the images over in the same order).

    Training puts the image before the text (`image_first=True`, the default); the released
    demo scripts put the text first. Comparison always interleaves: lead, reference, "Image A:",
    A, "Image B:", B, question.
    """
    image = {"type": "image"}
    if kind == "comparison":
        content = [{"type": "text", "text": COMPARISON_LEAD}, image,
                   {"type": "text", "text": "Image A:"}, image,
                   {"type": "text", "text": "Image B:"}, image,
                   {"type": "text", "text": COMPARISON_QUESTION}]
    else:
        text = {"type": "text", "text": question(kind)}
        content = [image, text] if image_first else [text, image]
    messages = [{"role": "user", "content": content}]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]})
    return messages


# ----------------------------------------------------------------------------------- parsing

@dataclass(frozen=True)
class Answer:
    score: float | None = None
    distortion_class: str | None = None
    severity: str | None = None
    choice: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
_THINK_END_RE = re.compile(r"</think>", re.I)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"


def answer_region(text: str) -> tuple[str, bool]:
    """The part of a response that holds the answer and whether it was tagged: the last
    <answer> block (an unclosed one runs to the end), else what follows </think>, else all."""
    blocks = _ANSWER_RE.findall(text)
    if blocks:
        return blocks[-1].strip(), True
    parts = _THINK_END_RE.split(text)
    if len(parts) > 1:
        return parts[-1].strip(), True
    return text.strip(), False


def _keyed_value(region: str, key: str) -> str | None:
    """Value of `key` in a JSON-like object, tolerant of single quotes, bare words and prose.
    Tries strict JSON first, then a key: value pattern."""
    start, end = region.find("{"), region.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(region[start:end + 1])
            if isinstance(obj, dict) and key in obj:
                value = obj[key]
                return "null" if value is None else str(value)
        except (ValueError, RecursionError):
            pass
    match = re.search(
        r"[\"']?" + re.escape(key) + r"[\"']?\s*[:=]\s*(?:\"([^\"]*)\"|'([^']*)'|([^,}\n]*))",
        region, re.I)
    if match is None:
        return None
    value = next(g for g in match.groups() if g is not None)
    return value.strip()


def parse_score(text: str, low: float = 1.0, high: float = 5.0) -> Answer:
    region, tagged = answer_region(text)
    raw = _keyed_value(region, "rating")
    if raw is None:
        # "4.2/5", "4.2 out of 5": a rating with its scale written out
        match = re.search(rf"({_NUMBER})\s*(?:/|out of)\s*5(?:\.0+)?\b", region, re.I)
        if match:
            raw = match.group(1)
        elif tagged or re.fullmatch(rf"\s*{_NUMBER}\s*", region):
            numbers = re.findall(_NUMBER, region)
            if len(numbers) != 1:
                return Answer(error=f"expected one number in the answer, found {len(numbers)}")
            raw = numbers[0]
        else:
            return Answer(error="no rating found")
    match = re.search(_NUMBER, raw)
    if match is None:
        return Answer(error=f"rating is not a number: {raw[:40]!r}")
    value = float(match.group(0))
    if not low <= value <= high:
        return Answer(error=f"rating {value:g} outside [{low:g}, {high:g}]")
    return Answer(score=value)


_CLASS_WORD_RE = re.compile(r"\b(" + "|".join(sorted(
    (re.escape(a) for a in _CLASS_ALIASES if a and a not in ("no", "none", "dark")),
    key=len, reverse=True)) + r")\b", re.I)
_LEVEL_WORD_RE = re.compile(r"\b(" + "|".join(LEVELS) + r")\b", re.I)


def parse_degradation(text: str) -> Answer:
    region, _ = answer_region(text)
    cls_raw, lev_raw = _keyed_value(region, "distortion_class"), _keyed_value(region, "severity")
    if cls_raw is None:
        # prose answer: accept it only when it names exactly one class
        found = {c for w in _CLASS_WORD_RE.findall(region) if (c := canonical_class(w))}
        if len(found) != 1:
            return Answer(error="no distortion_class found" if not found
                          else f"ambiguous classes in answer: {sorted(found)}")
        cls_raw = found.pop()
        if lev_raw is None:
            levels = {w.lower() for w in _LEVEL_WORD_RE.findall(region)}
            lev_raw = levels.pop() if len(levels) == 1 else ("null" if cls_raw == "null" else None)
    cls = canonical_class(cls_raw)
    if cls is None:
        return Answer(error=f"unknown distortion_class {cls_raw[:40]!r}")
    if cls == "null":
        return Answer(distortion_class="null", severity="null")
    level = canonical_level(lev_raw) if lev_raw is not None else None
    if level is None or level == "null":
        return Answer(error=f"no valid severity for class {cls!r}: {str(lev_raw)[:40]!r}")
    return Answer(distortion_class=cls, severity=level)


_CHOICE_RE = re.compile(r"\bimage\s*([ab])\b|\b(similar|comparable)\b", re.I)


def parse_choice(text: str) -> Answer:
    region, _ = answer_region(text)
    keyed = _keyed_value(region, "answer")
    found = set()
    for a_or_b, _similar in _CHOICE_RE.findall(keyed if keyed is not None else region):
        found.add(f"Image {a_or_b.upper()}" if a_or_b else "Similar")
    if len(found) != 1:
        return Answer(error="no choice found" if not found
                      else f"ambiguous choice: {sorted(found)}")
    return Answer(choice=found.pop())


def parse_answer(text: Any, kind: str) -> Answer:
    """Read a model's answer for a sample of `kind`. Never raises."""
    if not isinstance(text, str):
        return Answer(error=f"model output is {type(text).__name__}, not text")
    try:
        if kind == "score":
            return parse_score(text)
        if kind == "degradation":
            return parse_degradation(text)
        if kind == "comparison":
            return parse_choice(text)
        return Answer(error=f"unknown task kind {kind!r}")
    except Exception as exc:  # a parser bug must cost one sample, never the run
        return Answer(error=f"parser error: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------ format check

_LOOSE_FORMAT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>(.*?)</answer>\s*", re.S)
# The released trainer's patterns (bytedance/Q-Insight, src/open-r1-multimodal/src/open_r1/
# qinsight_multi_task.py:378-389 for JSON answers, qinsight_comparison.py:282-294 for plain
# ones): a newline after each opening tag and before each closing tag, any other whitespace
# around them; nothing before <think>; a JSON answer begins right after a newline and is flat
# (no braces inside). Its own system prompt shows the tags without newlines.
_STRICT_THINK = r"<think>\s*\n.*?\n\s*</think>\s*\n"
_STRICT_JSON_FORMAT_RE = re.compile(
    _STRICT_THINK + r"<answer>\s*\n\{[^{}]*\}\s*\n\s*</answer>\s*", re.S)
_STRICT_PLAIN_FORMAT_RE = re.compile(_STRICT_THINK + r"<answer>\s*\n.*?\n\s*</answer>\s*", re.S)


def format_ok(text: str, *, strict: bool = False, json_answer: bool = True) -> bool:
    """The format reward's test. Strict: the released trainer's pattern (above). Loose: any
    <think>…</think> then <answer>…</answer>, whitespace around them free, and (for score and
    degradation answers) the answer a flat JSON-like object: '{' first, '}' last, no other
    braces inside."""
    if strict:
        pattern = _STRICT_JSON_FORMAT_RE if json_answer else _STRICT_PLAIN_FORMAT_RE
        return pattern.fullmatch(text) is not None
    match = _LOOSE_FORMAT_RE.fullmatch(text)
    if match is None:
        return False
    if not json_answer:
        return True
    body = match.group(1).strip()
    return (len(body) >= 2 and body[0] == "{" and body[-1] == "}"
            and "{" not in body[1:-1] and "}" not in body[1:-1])
