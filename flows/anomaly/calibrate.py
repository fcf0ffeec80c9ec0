"""Thresholds from normal images alone, with an explicit expected false-reject rate.

An F1-optimal threshold needs defects in validation; without them it picks the
minimum score and every part fails. Here the image threshold is the
``1 - target_frr`` quantile of held-out normal scores: the larger of the
empirical quantile and a log-normal tail fit (with 40 held-out images the
empirical 99th percentile is just the maximum, so the fit carries the tail).
The pixel threshold is the ``1 - pixel_fpr`` quantile of normal map pixels.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = calibrate(rng.lognormal(0, 0.1, 40), rng.lognormal(0, 0.1, (40, 8, 8)), target_frr=0.01, pixel_fpr=0.001)
>>> bool(t.image > np.exp(0.1 * 2.3))
True
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from serving.engine.bundle import ScoreStats, Thresholds


def score_stats(x: np.ndarray) -> ScoreStats:
    """n, mean, std and quantiles of a score sample."""
    x = np.asarray(x, dtype=np.float64).ravel()
    q = np.quantile(x, [0.5, 0.95, 0.99])
    return ScoreStats(n=int(x.size), mean=float(x.mean()), std=float(x.std()), min=float(x.min()),
                      p50=float(q[0]), p95=float(q[1]), p99=float(q[2]), max=float(x.max()))


def lognormal_quantile(scores: np.ndarray, q: float) -> float:
    """``q`` quantile of a log-normal fitted to positive ``scores``."""
    logs = np.log(np.clip(np.asarray(scores, np.float64), 1e-12, None))
    sigma = logs.std(ddof=1) if logs.size > 1 else 0.0
    return float(np.exp(logs.mean() + NormalDist().inv_cdf(q) * sigma))


def image_threshold(normal_scores: np.ndarray, target_frr: float) -> tuple[float, str]:
    """(threshold, method) for a target false-reject rate on normal image scores."""
    scores = np.asarray(normal_scores, np.float64)
    if scores.size < 2:
        raise ValueError("need at least 2 held-out normal scores to calibrate")
    if not np.all(np.isfinite(scores)):
        raise ValueError("held-out normal scores contain NaN/inf; the model or images are broken")
    q = 1.0 - target_frr
    empirical = float(np.quantile(scores, q))
    parametric = lognormal_quantile(scores, q) if np.all(scores > 0) else empirical
    if parametric >= empirical:
        return parametric, "lognormal-tail"
    return empirical, "empirical-quantile"


def calibrate(normal_scores: np.ndarray, normal_maps: np.ndarray, *, target_frr: float, pixel_fpr: float) -> Thresholds:
    """Image and pixel thresholds from held-out normal scores and anomaly maps only."""
    scores = np.asarray(normal_scores, np.float64)
    thr, method = image_threshold(scores, target_frr)
    pixels = np.asarray(normal_maps, np.float32).ravel()
    pix_thr = float(np.quantile(pixels, 1.0 - pixel_fpr))
    # By construction thr >= the (1-frr) quantile of normals, so at most ~frr of them fail.
    return Thresholds(
        image=thr,
        pixel=pix_thr,
        target_frr=target_frr,
        holdout_frr=float(np.mean(scores > thr)),
        pixel_fpr=float(np.mean(pixels > pix_thr)),
        method=method,
        normal_image_scores=score_stats(scores),
        normal_pixel_scores=score_stats(pixels[:: max(1, pixels.size // 200_000)]),
        normal_scores=[float(v) for v in scores],
    )


def rate_above(scores: np.ndarray, threshold: float) -> float:
    """Fraction of ``scores`` strictly above ``threshold`` (0.0 for an empty set)."""
    scores = np.asarray(scores)
    return float(np.mean(scores > threshold)) if scores.size else 0.0
