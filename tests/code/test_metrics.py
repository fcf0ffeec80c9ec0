"""AUROC and latency summaries in numpy."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from flows.evaluation.metrics import auroc, percentiles


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
