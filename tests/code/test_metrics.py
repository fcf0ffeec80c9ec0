"""AUROC, its confidence interval, the escape rate's interval and latency summaries."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from flows.evaluation.evaluate import escape_interval
from flows.evaluation.metrics import auroc, auroc_difference_interval, auroc_interval, percentiles


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 20, 500).astype(float) + y * 3
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_auroc_perfect_inverted_and_single_class():
    assert auroc([0, 0, 1, 1], [1, 2, 3, 4]) == 1.0
    assert auroc([0, 0, 1, 1], [4, 3, 2, 1]) == 0.0
    assert auroc([0, 0, 0], [1, 2, 3]) is None


def test_percentiles():
    assert percentiles(list(range(1, 101))) == {"p50": pytest.approx(50.5), "p99": pytest.approx(99.01)}


def _delong_by_pairs(pos, neg):
    """DeLong's variance written from its definition: the matrix of every (defect, good) comparison."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return psi.mean(), v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size


def test_auroc_interval_is_delongs_with_ties():
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 12, 70).astype(float) + 2, rng.integers(0, 12, 90).astype(float)
    y, s = np.r_[np.ones(70), np.zeros(90)], np.r_[pos, neg]
    auc, var = _delong_by_pairs(pos, neg)
    lo, hi = auroc_interval(y, s)
    assert (lo + hi) / 2 == pytest.approx(auc) == auroc(y, s)
    assert (hi - lo) / 2 == pytest.approx(1.959964 * np.sqrt(var), rel=1e-5)


def test_auroc_interval_matches_the_bootstrap_and_narrows_with_more_parts():
    rng = np.random.default_rng(1)

    def draw(n):
        return np.r_[np.ones(n), np.zeros(n)], np.r_[rng.normal(2.6, 1, n), rng.normal(0, 1, n)]

    y, s = draw(100)
    lo, hi = auroc_interval(y, s)
    boot = []
    for _ in range(1000):
        k = np.r_[rng.integers(0, 100, 100), 100 + rng.integers(0, 100, 100)]
        boot.append(auroc(y[k], s[k]))
    assert (hi - lo) / 2 == pytest.approx(1.96 * np.std(boot), rel=0.15)
    y4, s4 = draw(400)
    lo4, hi4 = auroc_interval(y4, s4)
    assert 0.35 < (hi4 - lo4) / (hi - lo) < 0.65  # 4x the parts, about half the width


def test_paired_difference_is_delongs_and_tighter_than_either_interval():
    rng = np.random.default_rng(5)
    n = 150
    y = np.r_[np.ones(n), np.zeros(n)]
    part = np.r_[rng.normal(2.0, 1, n), rng.normal(0, 1, n)]  # what both settings see of each part
    a, b = part + rng.normal(0, 0.3, 2 * n), part + rng.normal(0, 0.3, 2 * n) - 0.4 * y
    diff, lo, hi = auroc_difference_interval(y, a, b)
    assert diff == pytest.approx(auroc(y, a) - auroc(y, b))
    pos, neg = y == 1, y == 0
    psi = lambda s: (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])  # noqa: E731
    d = psi(a) - psi(b)
    var = d.mean(1).var(ddof=1) / n + d.mean(0).var(ddof=1) / n
    assert (hi - lo) / 2 == pytest.approx(1.959964 * np.sqrt(var), rel=1e-5)
    assert lo > 0  # the shared part of the luck cancels: a is better on these parts, not by chance
    la, ha = auroc_interval(y, a)
    lb, hb = auroc_interval(y, b)
    assert hi - lo < min(ha - la, hb - lb) and la < hb  # the separate intervals overlap; the paired one resolves it
    assert auroc_difference_interval(y, a, a) == (0.0, 0.0, 0.0)


def test_auroc_interval_degenerate_cases():
    assert auroc_interval([0, 0, 1, 1], [1, 2, 3, 4]) == (1.0, 1.0)  # no spread to measure: read n beside it
    assert auroc_interval([0, 0, 0], [1, 2, 3]) is None
    lo, hi = auroc_interval([0, 1], [0.2, 0.1])  # one of each: the variance terms need two, the interval stays inside
    assert 0.0 <= lo <= hi <= 1.0


def test_escape_interval_is_exact_binomial():
    lo, hi = escape_interval(37, 100)
    assert lo == pytest.approx(0.2755, abs=1e-3) and hi == pytest.approx(0.4723, abs=1e-3)
    assert escape_interval(0, 100)[0] == 0.0 and escape_interval(0, 0) is None
