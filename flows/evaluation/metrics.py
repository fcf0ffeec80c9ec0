"""Detection metrics in plain numpy (no torch, no sklearn): AUROC with its confidence interval, and rates.

>>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def _midranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s``, ties sharing their average rank."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _split(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    return s[y], s[~y]


def auroc(labels, scores) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None if one class is absent."""
    pos, neg = _split(labels, scores)
    if not pos.size or not neg.size:
        return None
    u = _midranks(np.r_[pos, neg])[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _components(labels, scores) -> tuple[np.ndarray, np.ndarray] | None:
    """DeLong's structural components: for each defect, the share of good parts it outscores (ties half), and for
    each good part, the share of defects that outscore it. Their means are the AUROC."""
    pos, neg = _split(labels, scores)
    if not pos.size or not neg.size:
        return None
    m, n = pos.size, neg.size
    both = _midranks(np.r_[pos, neg])
    return (both[:m] - _midranks(pos)) / n, 1.0 - (both[m:] - _midranks(neg)) / m


def _interval(centre: float, v10: np.ndarray, v01: np.ndarray, level: float) -> tuple[float, float]:
    m, n = v10.size, v01.size
    var = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    half = NormalDist().inv_cdf(0.5 + level / 2) * float(np.sqrt(var))
    return centre - half, centre + half


def auroc_interval(labels, scores, level: float = 0.95) -> tuple[float, float] | None:
    """DeLong's confidence interval for :func:`auroc` (normal approximation, clipped to [0, 1]); None if one class
    is absent.

    It says how far the AUROC of a test set of this size could move on another draw of the same parts: on 100 good
    and 100 defective images an AUROC of 0.97 is about +-0.02. Where every defect outscores every good part (or
    none does) the components have no spread and the interval is the single point; read ``n`` beside it.
    """
    c = _components(labels, scores)
    if c is None:
        return None
    lo, hi = _interval(float(c[0].mean()), *c, level)
    return max(0.0, lo), min(1.0, hi)


def auroc_difference_interval(labels, scores_a, scores_b, level: float = 0.95) -> tuple[float, float, float] | None:
    """AUROC(a) - AUROC(b) on the same images, and DeLong's paired confidence interval for it: (difference, low,
    high); None if one class is absent.

    Two settings judged on the same parts share most of their luck, so their difference is known far better than
    either AUROC alone: an interval that excludes 0 says one setting ranks these parts better, not this draw.
    """
    a, b = _components(labels, scores_a), _components(labels, scores_b)
    if a is None or b is None:
        return None
    v10, v01 = a[0] - b[0], a[1] - b[1]
    diff = float(v10.mean())
    return (diff, *_interval(diff, v10, v01, level))


def percentiles(values_ms, qs=(50, 99)) -> dict[str, float]:
    """``{"p50": .., "p99": ..}`` of a latency sample in milliseconds."""
    v = np.asarray(values_ms, dtype=np.float64)
    return {f"p{q}": float(np.percentile(v, q)) if v.size else float("nan") for q in qs}
