"""Thresholds from normal images alone, with a stated guarantee: a conformal quantile of unseen normal scores.

Every training normal is scored *as unseen* (k-fold: each fold against a memory bank built without
it). The image threshold is the ``r``-th smallest of those ``n`` scores with ``r = ceil((n+1)(1-a))``
for a target false-reject rate ``a``: for a new normal part exchangeable with them, the chance of
scoring above it is at most ``a`` (split-conformal), and the false-reject rate it gives is
distributed Beta(n+1-r, r) -- its mean and 95 % interval go into the manifest with ``n``. The fold
banks are smaller than the final bank, so unseen scores err high and the guarantee holds with room.
The pixel threshold is the ``1 - pixel_fpr`` quantile of the unseen normals' map pixels.

>>> import numpy as np
>>> t = calibrate(np.arange(1.0, 201.0), np.ones((200, 4, 4)), target_frr=0.01, pixel_fpr=0.001)
>>> t.image, round(t.frr_expected, 4), t.n_normals
(199.0, 0.01, 200)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

from serving.engine.manifest import ScoreStats, Thresholds

METHOD = "conformal quantile of k-fold unseen normal scores"


def score_stats(x: np.ndarray) -> ScoreStats:
    """n, mean, std and quantiles of a score sample."""
    x = np.asarray(x, dtype=np.float64).ravel()
    q = np.quantile(x, [0.5, 0.95, 0.99])
    return ScoreStats(n=int(x.size), mean=float(x.mean()), std=float(x.std()), min=float(x.min()),
                      p50=float(q[0]), p95=float(q[1]), p99=float(q[2]), max=float(x.max()))


def conformal_rank(n: int, target_frr: float) -> int:
    """The rank (1-based, ascending) of the unseen score used as threshold; ``n`` when too few normals."""
    return min(n, math.ceil((n + 1) * (1.0 - target_frr)))


def expected_frr(n: int, rank: int) -> tuple[float, tuple[float, float]]:
    """Mean and 95 % interval of the false-reject rate a rank-``rank`` threshold over ``n`` unseen normals gives."""
    a, b = n + 1 - rank, rank
    return a / (n + 1), (float(beta.ppf(0.025, a, b)), float(beta.ppf(0.975, a, b)))


def image_threshold(unseen_scores: np.ndarray, target_frr: float) -> tuple[float, int]:
    """(threshold, rank) for a target false-reject rate over unseen normal scores."""
    scores = np.sort(np.asarray(unseen_scores, np.float64))
    if scores.size < 2:
        raise ValueError("need at least 2 unseen normal scores to calibrate")
    if not np.all(np.isfinite(scores)):
        raise ValueError("unseen normal scores contain NaN/inf; the model or images are broken")
    rank = conformal_rank(scores.size, target_frr)
    return float(scores[rank - 1]), rank


def min_normals(target_frr: float) -> int:
    """How many normals a target false-reject rate needs before its conformal quantile exists (below, the max)."""
    return math.ceil(1.0 / target_frr) - 1


def calibrate(unseen_scores: np.ndarray, unseen_maps: np.ndarray, *, target_frr: float, pixel_fpr: float,
              folds: int = 0) -> Thresholds:
    """Image and pixel thresholds from unseen normal scores and anomaly maps only."""
    scores = np.asarray(unseen_scores, np.float64)
    thr, rank = image_threshold(scores, target_frr)
    mean, interval = expected_frr(scores.size, rank)
    pixels = np.asarray(unseen_maps, np.float32).ravel()
    pix_thr = float(np.quantile(pixels, 1.0 - pixel_fpr))
    return Thresholds(
        image=thr, pixel=pix_thr, target_frr=target_frr, holdout_frr=rate_above(scores, thr),
        pixel_fpr=float(np.mean(pixels > pix_thr)), method=METHOD, frr_expected=mean, frr_interval=interval,
        n_normals=int(scores.size), folds=folds, normal_image_scores=score_stats(scores),
        normal_pixel_scores=score_stats(pixels[:: max(1, pixels.size // 200_000)]),
        normal_scores=[float(v) for v in scores],
    )


def rate_above(scores: np.ndarray, threshold: float) -> float:
    """Fraction of ``scores`` strictly above ``threshold`` (0.0 for an empty set)."""
    scores = np.asarray(scores)
    return float(np.mean(scores > threshold)) if scores.size else 0.0
