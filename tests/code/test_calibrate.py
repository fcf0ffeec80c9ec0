"""Calibration from normal images only: the conformal threshold and its stated false-reject rate."""

import numpy as np
import pytest
from scipy.stats import lognorm

from flows.anomaly.calibrate import (calibrate, conformal_rank, expected_frr, image_threshold, min_normals,
                                     rate_above, score_stats)


def test_the_stated_interval_covers_the_true_frr_on_fresh_normals():
    """Over many enrollments, the true FRR of the threshold lies inside the 95 % interval about 95 % of the time,
    and its average is the stated expectation: the guarantee is checked, not assumed."""
    rng = np.random.default_rng(1)
    dist = lognorm(s=0.15, scale=np.exp(3.0))
    inside, true_frrs, expected = 0, [], None
    for _ in range(400):
        t = calibrate(dist.rvs(200, random_state=rng), np.ones((200, 2, 2)), target_frr=0.01, pixel_fpr=0.01)
        true_frr = float(dist.sf(t.image))
        lo, hi = t.frr_interval
        inside += lo <= true_frr <= hi
        true_frrs.append(true_frr)
        expected = t.frr_expected
    assert inside / 400 >= 0.92
    assert np.mean(true_frrs) == pytest.approx(expected, rel=0.15)
    assert expected <= 0.01


def test_rank_and_expected_frr_follow_the_conformal_formula():
    assert conformal_rank(199, 0.01) == 198  # ceil(200 * 0.99)
    mean, (lo, hi) = expected_frr(199, 198)
    assert mean == pytest.approx(2 / 200)
    assert 0 < lo < mean < hi < 0.04


def test_too_few_normals_use_the_max_and_say_what_that_promises():
    scores = np.linspace(1, 2, 30)
    thr, rank = image_threshold(scores, 0.01)
    assert (thr, rank) == (2.0, 30)
    assert expected_frr(30, 30)[0] == pytest.approx(1 / 31)  # not the 1 % asked for: the manifest says so
    assert min_normals(0.01) == 99


def test_lower_target_frr_never_lowers_the_threshold():
    scores = np.random.default_rng(3).lognormal(1.0, 0.3, 50)
    thresholds = [image_threshold(scores, f)[0] for f in (0.1, 0.05, 0.01, 0.001)]
    assert thresholds == sorted(thresholds)


def test_calibrate_records_stats_pixel_threshold_interval_and_count():
    rng = np.random.default_rng(4)
    scores = rng.lognormal(0, 0.1, 40)
    maps = rng.normal(1.0, 0.1, (40, 16, 16)).astype(np.float32)
    t = calibrate(scores, maps, target_frr=0.05, pixel_fpr=0.01, folds=4)
    assert (t.target_frr, t.n_normals, t.folds) == (0.05, 40, 4)
    assert t.method.startswith("conformal")
    assert t.pixel_fpr == pytest.approx(0.01, abs=0.002)
    assert t.normal_image_scores.max == pytest.approx(scores.max())
    assert t.holdout_frr == rate_above(scores, t.image)
    assert t.frr_interval[0] < t.frr_expected < t.frr_interval[1]
    assert len(t.normal_scores) == 40


@pytest.mark.parametrize("bad", [[1.0], [1.0, float("nan"), 2.0]])
def test_bad_score_samples_are_refused(bad):
    with pytest.raises(ValueError):
        image_threshold(np.array(bad), 0.01)


def test_score_stats_quantiles():
    s = score_stats(np.arange(101, dtype=float))
    assert (s.min, s.p50, s.max, s.n) == (0.0, 50.0, 100.0, 101)
