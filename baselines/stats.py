"""`stats`: a classical-statistics baseline for the degradation protocol and for scoring.

Four cheap image statistics (noise level, sharpness, 8×8 blockiness, luminance) feed a
Gaussian classifier for the distortion class; the level comes from the class's own statistic
through cut points halfway between per-level medians. Both are fitted on synthetic
degradations of photographs disjoint from the demo test photographs (tasks/synthetic.py
FIT_PHOTOS), never on test images. The quality score is 5 − expected severity.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from qbench import Model, ModelConfig, Prediction, Sample, register_model
from qbench.protocol import CLASSES, LEVELS

FEATURES = ("log_noise", "sharpness", "blockiness", "p99_luma", "mean_luma", "log_lapvar")
# The statistic that orders severity within each class, and whether it grows with severity.
LEVEL_FEATURE = {"noise": ("log_noise", True), "blur": ("sharpness", False),
                 "jpeg": ("blockiness", True), "darken": ("p99_luma", False)}
FIT_SEED = 12345
FIT_VERSION = 1


def image_statistics(image: Image.Image | np.ndarray) -> np.ndarray:
    """The feature vector (FEATURES order) of one RGB image."""
    rgb = np.asarray(image, dtype=np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32) if rgb.ndim == 3 else rgb
    h, w = gray.shape
    # Immerkær's fast noise estimate: a Laplacian-difference mask that cancels smooth structure
    lap2 = (gray[:-2, :-2] - 2 * gray[:-2, 1:-1] + gray[:-2, 2:]
            - 2 * gray[1:-1, :-2] + 4 * gray[1:-1, 1:-1] - 2 * gray[1:-1, 2:]
            + gray[2:, :-2] - 2 * gray[2:, 1:-1] + gray[2:, 2:])
    noise = np.sqrt(np.pi / 2) * np.abs(lap2).sum() / (6 * (w - 2) * (h - 2))
    dx, dy = np.abs(np.diff(gray, axis=1)), np.abs(np.diff(gray, axis=0))
    contrast = gray.std() + 1.0
    sharpness = np.log((dx.mean() + dy.mean()) / contrast + 1e-4)
    lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]

    def block_ratio(d: np.ndarray) -> float:  # differences across 8-pixel boundaries vs inside
        edge = np.zeros(d.shape[1], bool)
        edge[7::8] = True
        return float(d[:, edge].mean() + 1e-3) / float(d[:, ~edge].mean() + 1e-3)

    blockiness = np.log(block_ratio(dx) * block_ratio(dy.T))
    luma = gray / 255.0
    return np.array([np.log(noise + 1e-2), sharpness, blockiness, np.percentile(luma, 99),
                     luma.mean(), np.log(lap.var() + 1.0)], dtype=np.float64)


class StatsFit:
    """Fitted parameters: per-class Gaussians (standardised features) and per-level medians."""

    def __init__(self, params: dict):
        self.params = params
        self.mean = np.array(params["feature_mean"])
        self.scale = np.array(params["feature_scale"])
        self.class_mean = {c: np.array(v) for c, v in params["class_mean"].items()}
        self.class_cov_inv = {c: np.linalg.inv(np.array(v)) for c, v in params["class_cov"].items()}
        self.class_logdet = {c: float(np.linalg.slogdet(np.array(v))[1])
                             for c, v in params["class_cov"].items()}

    @classmethod
    def fit(cls, features: np.ndarray, classes: Sequence[str], levels: Sequence[int]) -> "StatsFit":
        mean, scale = features.mean(0), features.std(0) + 1e-9
        z = (features - mean) / scale
        labels = np.asarray(classes)
        params = {"version": FIT_VERSION, "features": FEATURES, "feature_mean": mean.tolist(),
                  "feature_scale": scale.tolist(), "class_mean": {}, "class_cov": {},
                  "level_medians": {}}
        for c in CLASSES:
            rows = z[labels == c]
            cov = np.cov(rows, rowvar=False) + 0.05 * np.eye(z.shape[1])  # shrink: few null rows
            params["class_mean"][c] = rows.mean(0).tolist()
            params["class_cov"][c] = cov.tolist()
        level_arr = np.asarray(levels)
        for c, (feature, _) in LEVEL_FEATURE.items():
            column = features[:, FEATURES.index(feature)]
            params["level_medians"][c] = [float(np.median(column[(labels == c) & (level_arr == k)]))
                                          for k in range(1, len(LEVELS) + 1)]
        return cls(params)

    def class_posterior(self, x: np.ndarray) -> dict[str, float]:
        z = (x - self.mean) / self.scale
        log_like = {}
        for c in CLASSES:
            d = z - self.class_mean[c]
            log_like[c] = -0.5 * (d @ self.class_cov_inv[c] @ d + self.class_logdet[c])
        top = max(log_like.values())
        weights = {c: np.exp(v - top) for c, v in log_like.items()}
        total = sum(weights.values())
        return {c: float(w / total) for c, w in weights.items()}

    def level(self, cls: str, x: np.ndarray) -> float:
        """Continuous severity in [1, 5]: the statistic interpolated between level medians."""
        feature, increasing = LEVEL_FEATURE[cls]
        value = x[FEATURES.index(feature)]
        medians = np.array(self.params["level_medians"][cls])
        steps = np.arange(1, len(LEVELS) + 1, dtype=float)
        if not increasing:
            medians, value = -medians, -value
        order = np.argsort(medians)  # interp needs increasing x
        return float(np.interp(value, medians[order], steps[order]))


def fit_on_disjoint_photos() -> StatsFit:
    """Fit on synthetic degradations of FIT_PHOTOS (cached as JSON in $QBENCH_CACHE)."""
    from qbench.tasks.synthetic import FIT_PHOTOS, bundled_photo, variants
    cache = Path(os.environ.get("QBENCH_CACHE", "~/.cache/qbench")).expanduser() / f"stats-fit-v{FIT_VERSION}.json"
    if cache.exists():
        try:
            return StatsFit(json.loads(cache.read_text()))
        except (ValueError, KeyError, np.linalg.LinAlgError):
            pass  # a damaged cache is refitted
    rows, classes, levels = [], [], []
    for v in variants([bundled_photo(*p) for p in FIT_PHOTOS], seed=FIT_SEED):
        rows.append(image_statistics(v.image))
        classes.append(v.distortion)
        levels.append(v.severity)
    fit = StatsFit.fit(np.array(rows), classes, levels)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(fit.params))
    return fit


@register_model("stats")
class StatsModel(Model):
    """Classical statistics (noise, sharpness, blockiness, luminance); fitted offline"""

    name = "stats"
    kinds = frozenset({"score", "degradation"})
    score_range = (1.0, 5.0)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.fit = fit_on_disjoint_photos()

    def settings(self) -> dict:
        return super().settings() | {"fit_version": FIT_VERSION}

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        out = []
        for sample, (image, *_) in zip(samples, images):
            x = image_statistics(image)
            posterior = self.fit.class_posterior(x)
            cls = max(posterior, key=posterior.get)
            expected_severity = sum(p * self.fit.level(c, x) for c, p in posterior.items() if c != "null")
            level = "null" if cls == "null" else LEVELS[int(np.clip(round(self.fit.level(cls, x)), 1, 5)) - 1]
            out.append(Prediction(task=sample.task, sample_id=sample.id,
                                  score=float(np.clip(5.0 - expected_severity, 1.0, 5.0)),
                                  distortion_class=cls, severity=level,
                                  extra={"p_class": {c: round(p, 4) for c, p in posterior.items()}}))
        return out
