"""`lineguard compare`'s paired evidence: is bundle B better on these parts, or was the draw kind to it?"""

import numpy as np
import pytest

from flows.evaluation.compare import evidence_lines, paired_evidence
from flows.evaluation.metrics import auroc


def test_b_catching_more_defects_is_shown_beyond_chance():
    rng = np.random.default_rng(0)
    n = 200
    y = np.r_[np.ones(n), np.zeros(n)]
    part = np.r_[rng.normal(1.5, 1, n), rng.normal(0, 1, n)]
    sa, sb = part + rng.normal(0, 0.3, 2 * n), part + rng.normal(0, 0.3, 2 * n) + 0.6 * y
    fa, fb = sa > 1.5, sb > 1.5
    ev = paired_evidence(y, sa, sb, fa, fb)
    d, lo, hi = ev["auroc_difference"]
    assert d == pytest.approx(auroc(y, sb) - auroc(y, sa)) and lo > 0
    c = ev["defects"]
    assert c["only_b_right"] == int((y.astype(bool) & fb & ~fa).sum()) > c["only_a_right"]
    assert c["mcnemar_p"] < 0.01
    text = "\n".join(evidence_lines(ev, 2 * n))
    assert "B ranks these parts better" in text and "caught by B only" in text


def test_the_same_verdicts_are_within_chance():
    y = [1, 1, 0, 0, 1, 0]
    s = [0.9, 0.8, 0.1, 0.3, 0.4, 0.5]
    f = [True, True, False, False, False, True]
    ev = paired_evidence(y, s, s, f, f)
    assert ev["auroc_difference"] == [0.0, 0.0, 0.0]
    assert ev["defects"] == {"only_b_right": 0, "only_a_right": 0, "mcnemar_p": 1.0} == ev["goods"]
    assert "within chance" in evidence_lines(ev, 6)[0]


def test_one_class_only_gives_no_auroc_but_still_counts_goods():
    ev = paired_evidence([0, 0, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.9], [False] * 3, [False, False, True])
    assert ev["auroc_difference"] is None and ev["defects"] is None
    assert ev["goods"]["only_a_right"] == 1 and ev["goods"]["only_b_right"] == 0
