"""From generated texts to predictions when a model answers each sample K times (sampling with
`samples=K`): every answer goes through the protocol parser, ratings are averaged, classes and
choices are voted, and the prediction records that it was combined from K answers."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from statistics import fmean

from qbench.core.model import predictions_from_texts
from qbench.core.records import Prediction, Sample


def combine(answers: list[Prediction]) -> Prediction:
    """One prediction from a sample's K parsed answers (all for the same sample)."""
    first = answers[0]
    ok = [a for a in answers if a.ok]
    extra = {"samples": len(answers), "parsed": len(ok),
             "other_texts": [a.text for a in answers[1:]]}
    if not ok:
        return Prediction(task=first.task, sample_id=first.sample_id, status=first.status,
                          text=first.text, latency_s=first.latency_s * len(answers),
                          error=f"none of {len(answers)} answers parsed; first: {first.error}",
                          extra=extra)
    combined = Prediction(task=first.task, sample_id=first.sample_id, text=first.text,
                          latency_s=first.latency_s * len(answers), extra=extra)
    if ok[0].score is not None:
        scores = [a.score for a in ok if a.score is not None]   # every parsed rating has one
        combined.score = fmean(scores)
        extra["scores"] = scores
    elif ok[0].choice is not None:
        combined.choice, _ = Counter(a.choice for a in ok).most_common(1)[0]
    else:  # ties go to the answer seen first
        (combined.distortion_class, combined.severity), _ = Counter(
            (a.distortion_class, a.severity) for a in ok).most_common(1)[0]
    return combined


def predictions_from_answers(samples: Sequence[Sample], answers: Sequence[list[str] | None],
                             latency_s: float, errors: Sequence[str | None] | None = None
                             ) -> list[Prediction]:
    """Predictions for samples that each got a list of answer texts (None: the model failed
    on that sample, `errors` says why). One answer each is the plain parse path."""
    if all(a is None or len(a) == 1 for a in answers):
        return predictions_from_texts(samples, [a[0] if a else None for a in answers],
                                      latency_s, errors)
    per_sample = latency_s / max(len(samples), 1)
    out = []
    for i, (sample, texts) in enumerate(zip(samples, answers, strict=True)):
        if not texts:
            out += predictions_from_texts([sample], [None], per_sample,
                                          [errors[i] if errors else "no output"])
            continue
        parsed = predictions_from_texts([sample] * len(texts), texts, per_sample)
        out.append(combine(parsed))
    return out
