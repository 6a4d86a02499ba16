"""`stats`: a classical-statistics baseline for the degradation protocol and for scoring.

Cheap image statistics (noise level, sharpness, re-blur, 8×8 blockiness and flat blocks,
luminance) feed one Gaussian per (class, level) cell; class and level are read off the cell
posterior. The cells are fitted on synthetic degradations of photographs disjoint from the
demo test photographs (tasks/synthetic.py FIT_PHOTOS), never on test images. The quality
score is 5 − 4/5 · expected severity under the posterior: severity 0 (none) to 5
(catastrophic) maps onto the MOS scale [1, 5] the model declares.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from qbench import Model, ModelConfig, Prediction, Sample, register_model
from qbench.core.protocol import CLASSES, LEVELS
from qbench.core.settings import cache_root

FEATURES = ("log_noise", "sharpness", "blockiness", "p99_luma", "mean_luma", "log_lapvar",
            "reblur", "flat_blocks")
FIT_SEED = 12345
FIT_VERSION = 3
SCORE_MAPPING = "5 - 0.8 * expected severity"   # in the settings: a new mapping, a new run id
FIT_CROPS = 6  # crops per fitting photograph: the null class gets one image per crop
SHRINK = 0.05  # added to every covariance: each cell has only a few dozen fitting images


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
    gradient = dx.mean() + dy.mean() + 1e-3
    sharpness = np.log(gradient / (gray.std() + 1.0) + 1e-4)
    lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]

    def block_ratio(d: np.ndarray) -> float:  # differences across 8-pixel boundaries vs inside
        edge = np.zeros(d.shape[1], bool)
        edge[7::8] = True
        return float(d[:, edge].mean() + 1e-3) / float(d[:, ~edge].mean() + 1e-3)

    blockiness = np.log(block_ratio(dx) * block_ratio(dy.T))
    # re-blur: an already blurred image loses little gradient energy when blurred again
    reblurred = np.asarray(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
                           .filter(ImageFilter.GaussianBlur(1.5)), np.float32)
    reblur = np.log(gradient / (np.abs(np.diff(reblurred, axis=1)).mean()
                                + np.abs(np.diff(reblurred, axis=0)).mean() + 1e-3))
    # JPEG flattens 8x8 blocks: the share of nearly constant blocks grows with compression
    blocks = gray[:h // 8 * 8, :w // 8 * 8].reshape(h // 8, 8, w // 8, 8).std(axis=(1, 3))
    luma = gray / 255.0
    return np.array([np.log(noise + 1e-2), sharpness, blockiness, np.percentile(luma, 99),
                     luma.mean(), np.log(lap.var() + 1.0), reblur, float(np.mean(blocks < 1.0))],
                    dtype=np.float64)


CELLS: tuple[tuple[str, int], ...] = tuple(
    (c, level) for c in CLASSES for level in ((0,) if c == "null" else range(1, len(LEVELS) + 1)))

CELL_PRIOR = np.array([1.0 / sum(c == cls for c, _ in CELLS) for cls, _ in CELLS])


class StatsFit:
    """One Gaussian per (class, level) cell over standardised statistics: class and level are
    read off the cell posterior together."""

    def __init__(self, params: dict):
        self.params = params
        self.mean = np.array(params["feature_mean"])
        self.scale = np.array(params["feature_scale"])
        covs = np.array(params["cell_cov"])
        self.cell_mean = np.array(params["cell_mean"])
        self.cell_cov_inv = np.linalg.inv(covs)
        self.cell_logdet = np.linalg.slogdet(covs)[1]

    @classmethod
    def fit(cls, features: np.ndarray, classes: Sequence[str], levels: Sequence[int]) -> StatsFit:
        mean, scale = features.mean(0), features.std(0) + 1e-9
        z = (features - mean) / scale
        labels, level_arr = np.asarray(classes), np.asarray(levels)
        means, covs = [], []
        for c, level in CELLS:
            rows = z[(labels == c) & (level_arr == level)]
            means.append(rows.mean(0).tolist())
            covs.append((np.cov(rows, rowvar=False) + SHRINK * np.eye(z.shape[1])).tolist())
        return cls({"version": FIT_VERSION, "features": FEATURES, "cells": CELLS,
                    "feature_mean": mean.tolist(), "feature_scale": scale.tolist(),
                    "cell_mean": means, "cell_cov": covs})

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """Probability of each cell of CELLS. Every class has the same prior, shared among its
        cells: with equal cell priors the one null cell would face five cells per distortion."""
        d = (x - self.mean) / self.scale - self.cell_mean
        log_like = -0.5 * (np.einsum("kj,kjl,kl->k", d, self.cell_cov_inv, d) + self.cell_logdet)
        weights = np.exp(log_like - log_like.max()) * CELL_PRIOR
        return weights / weights.sum()


def fit_on_disjoint_photos() -> StatsFit:
    """Fit on synthetic degradations of FIT_PHOTOS (cached as JSON in $QBENCH_CACHE)."""
    from qbench.tasks.synthetic import FIT_PHOTOS, bundled_photo, variants
    cache = cache_root() / f"stats-fit-v{FIT_VERSION}.json"
    if cache.exists():
        try:
            return StatsFit(json.loads(cache.read_text()))
        except (ValueError, KeyError, TypeError, np.linalg.LinAlgError):
            pass  # a damaged cache is refitted
    rows, classes, levels = [], [], []
    photos = [bundled_photo(*p) for p in FIT_PHOTOS]
    for v in variants(photos, seed=FIT_SEED, crops_per_photo=FIT_CROPS):
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
        return super().settings() | {"fit_version": FIT_VERSION, "score": SCORE_MAPPING}

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        out = []
        for sample, (image, *_) in zip(samples, images, strict=True):
            posterior = self.fit.posterior(image_statistics(image))
            cells = list(zip(CELLS, posterior, strict=True))
            by_class = {c: float(sum(p for (cc, _), p in cells if cc == c)) for c in CLASSES}
            cls = max(by_class, key=by_class.__getitem__)
            _, level = max((p, lev) for (cc, lev), p in cells if cc == cls)
            expected_severity = float(sum(p * lev for (_, lev), p in cells))
            out.append(Prediction(task=sample.task, sample_id=sample.id,
                                  score=5.0 - 0.8 * expected_severity, distortion_class=cls,
                                  severity="null" if cls == "null" else LEVELS[level - 1],
                                  extra={"p_class": {c: round(p, 4) for c, p in by_class.items()}}))
        return out
