"""Calibration from normal images only: pure logic."""

import numpy as np
import pytest

from flows.anomaly.calibrate import calibrate, image_threshold, lognormal_quantile, rate_above, score_stats


def test_threshold_meets_target_frr_on_fresh_normals():
    rng = np.random.default_rng(1)
    held_out = rng.lognormal(3.0, 0.15, 200)
    thr, _ = image_threshold(held_out, 0.01)
    fresh = rng.lognormal(3.0, 0.15, 100_000)
    assert rate_above(fresh, thr) < 0.02  # near the 1 % target, not "every part fails"


def test_small_holdout_uses_the_tail_fit_not_the_sample_max():
    rng = np.random.default_rng(2)
    scores = rng.lognormal(0.0, 0.2, 40)
    thr, method = image_threshold(scores, 0.001)
    assert method == "lognormal-tail"
    assert thr > scores.max()
    assert thr == pytest.approx(lognormal_quantile(scores, 0.999))


def test_no_defects_never_gives_a_threshold_that_fails_every_part():
    normals = np.full(30, 5.0)  # degenerate: every normal scores the same
    thr, _ = image_threshold(normals, 0.01)
    assert rate_above(normals, thr) == 0.0


def test_lower_target_frr_never_lowers_the_threshold():
    scores = np.random.default_rng(3).lognormal(1.0, 0.3, 50)
    thresholds = [image_threshold(scores, f)[0] for f in (0.1, 0.05, 0.01, 0.001)]
    assert thresholds == sorted(thresholds)


def test_calibrate_records_stats_pixel_threshold_and_rates():
    rng = np.random.default_rng(4)
    scores = rng.lognormal(0, 0.1, 40)
    maps = rng.normal(1.0, 0.1, (40, 16, 16)).astype(np.float32)
    t = calibrate(scores, maps, target_frr=0.01, pixel_fpr=0.01)
    assert t.target_frr == 0.01
    assert t.pixel_fpr == pytest.approx(0.01, abs=0.002)
    assert t.normal_image_scores.n == 40
    assert t.normal_image_scores.max == pytest.approx(scores.max())
    assert t.holdout_frr == rate_above(scores, t.image)
    assert len(t.normal_scores) == 40


@pytest.mark.parametrize("bad", [[1.0], [1.0, float("nan"), 2.0]])
def test_bad_score_samples_are_refused(bad):
    with pytest.raises(ValueError):
        image_threshold(np.array(bad), 0.01)


def test_score_stats_quantiles():
    s = score_stats(np.arange(101, dtype=float))
    assert (s.min, s.p50, s.max, s.n) == (0.0, 50.0, 100.0, 101)
