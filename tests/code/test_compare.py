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


def test_images_are_paired_by_file_when_one_bundle_skipped_one(monkeypatch, tmp_path):
    """A bundle that could not score an image (its ROI off that frame) reports one result fewer: the rest must still
    be compared image with image, not shifted by one."""
    from pathlib import Path

    from flows.evaluation import compare as cmp
    from flows.evaluation.evaluate import Scored

    def result(name, label, score, verdict):
        return Scored(Path(name), label, "defect" if label else "good", score, np.zeros((2, 2)), np.zeros((2, 2, 3)),
                      verdict, "score")

    images = [("d1.png", 1, 0.9, "FAIL"), ("d2.png", 1, 0.8, "FAIL"), ("g1.png", 0, 0.1, "PASS"),
              ("g2.png", 0, 0.2, "PASS")]
    reports = {}
    for side, rows in (("a", images), ("b", images[1:])):  # B could not score d1.png
        reports[side] = {"_results": [result(*r) for r in rows], "latency_ms": {"p50": 1.0, "p99": 2.0},
                         "image_auroc": 1.0, "pixel_auroc": None, "threshold": 0.5, "frr": 0.0, "escape_rate": 0.0}
    monkeypatch.setattr(cmp, "evaluate", lambda bundle, *a, **k: reports[bundle])
    out = cmp.compare("a", "b", tmp_path, tmp_path / "cmp")
    assert out["summary"]["flips"] == []  # shifted by one, d2 would meet g1 and flip
    assert "verdicts that differ: 0 of 3" in out["table"] and "1 images scored by one bundle only" in out["table"]
