"""The Stability Index: pure formula (unit and property tests) and the monitor's alarm with hysteresis."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serving.drift.baseline import Baseline, FigureStats
from serving.drift.figures import PartFigures, part_figures
from serving.drift.monitor import StabilityMonitor
from serving.drift.stability import StabilityConfig, Window, binomial_p, stability

FS = FigureStats(n=100, mean=1.0, std=0.1, p05=0.85, p50=1.0, p95=1.2)
LUM = FigureStats(n=100, mean=120.0, std=4.0, p05=113.0, p50=120.0, p95=127.0)
SHARP = FigureStats(n=100, mean=50.0, std=5.0, p05=42.0, p50=50.0, p95=58.0)
BAL = FigureStats(n=100, mean=0.0, std=0.01, p05=-0.02, p50=0.0, p95=0.02)
BASE = Baseline(score=FS, embedding_dims=2, embedding_centroid=[0.0, 0.0], embedding_spread=1.0, luminance=LUM,
                color_balance=BAL, sharpness=SHARP, frr_expected=0.01, frr_interval=(0.003, 0.03))
CFG = StabilityConfig()


def window(n=50, score=1.0, shift=0.0, lum=120.0, sharp=50.0, false_alarms=0):
    return Window(scores=[score] * n, embeddings=[[shift, 0.0]] * n, luminance=[lum] * n, color_balance=[0.0] * n,
                  sharpness=[sharp] * n, parts=n, false_alarms=false_alarms)


def test_as_at_enrollment_is_100_and_nothing_moves():
    r = stability(window(), BASE, CFG)
    assert r.index == 100 and r.moving is None
    assert set(r.components) == {"score", "feature", "false_rejects", "lighting", "focus"}


@pytest.mark.parametrize("kw, moving", [({"score": 2.5}, "score"), ({"shift": 1.5}, "feature"),
                                        ({"lum": 95.0}, "lighting"), ({"sharp": 20.0}, "focus"),
                                        ({"false_alarms": 6}, "false_rejects")])
def test_each_kind_of_drift_drops_the_index_below_the_alert_and_is_named(kw, moving):
    r = stability(window(**kw), BASE, CFG)
    assert r.index < CFG.alert_below and r.moving == moving


def test_component_at_its_tolerance_scores_50():
    # score p95 at (1 + tolerance) x baseline p95 -> severity 1 -> 50
    r = stability(window(score=BASE.score.p95 * (1 + CFG.score_tolerance)), BASE, CFG)
    assert r.components["score"].score == pytest.approx(50.0)


def test_false_rejects_use_a_binomial_test_not_a_ratio():
    # 1 false alarm in 50 parts at 1 % expected is unremarkable; 6 is not
    assert stability(window(false_alarms=1), BASE, CFG).components["false_rejects"].score == 100
    assert stability(window(false_alarms=6), BASE, CFG).components["false_rejects"].score < 50
    assert binomial_p(0, 50, 0.01) == 1.0
    assert binomial_p(2, 50, 0.01) == pytest.approx(1 - 0.99 ** 50 - 50 * 0.01 * 0.99 ** 49)


def test_too_few_parts_say_nothing():
    assert stability(window(n=5, score=10.0), BASE, CFG).index == 100


@settings(max_examples=200, deadline=None)
@given(score=st.floats(0.5, 5), shift=st.floats(0, 5), lum=st.floats(60, 200), sharp=st.floats(5, 200),
       fa=st.integers(0, 20), which=st.sampled_from(["score", "shift", "lum", "sharp", "fa"]),
       worse=st.floats(0.01, 3))
def test_the_index_never_rises_when_one_component_worsens(score, shift, lum, sharp, fa, which, worse):
    kw = {"score": score, "shift": shift, "lum": lum, "sharp": sharp, "false_alarms": fa}
    before = stability(window(**kw), BASE, CFG).index
    if which == "score":
        kw["score"] = score * (1 + worse)
    elif which == "shift":
        kw["shift"] = shift + worse
    elif which == "lum":
        kw["lum"] = lum + np.sign(lum - 120.0 or 1) * worse * 10
    elif which == "sharp":
        kw["sharp"] = sharp * (1 + worse) if sharp >= 50 else sharp / (1 + worse)
    else:
        kw["false_alarms"] = fa + max(1, int(worse * 5))
    assert stability(window(**kw), BASE, CFG).index <= before + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 10), min_size=20, max_size=80))
def test_the_index_is_always_between_0_and_100(scores):
    w = Window(scores=scores, embeddings=[], luminance=[], color_balance=[], sharpness=[], parts=len(scores),
               false_alarms=0)
    assert 0 <= stability(w, BASE, CFG).index <= 100


def test_config_refuses_a_hysteresis_that_would_flicker():
    with pytest.raises(ValidationError, match="clear_above"):
        StabilityConfig(alert_below=60, clear_above=55)
    with pytest.raises(ValidationError, match="min_parts"):
        StabilityConfig(window=20, min_parts=30)


def test_monitor_alerts_once_and_clears_only_above_the_hysteresis():
    events = []
    m = StabilityMonitor(BASE, StabilityConfig(window=20, min_parts=10), on_alert=lambda up, r: events.append(up))
    fig = PartFigures(luminance=120.0, color_balance=0.0, sharpness=50.0)
    for _ in range(30):
        m.add(1.0, [0.0, 0.0], fig)
    assert events == [] and m.report.index == 100
    for _ in range(20):
        m.add(3.0, [0.0, 0.0], fig)  # scores triple
    assert events == [True] and m.alert and m.report.moving == "score"
    for _ in range(20):
        m.add(1.0, [0.0, 0.0], fig)
    assert events == [True, False] and not m.alert


def test_monitor_counts_failed_inspections_out_and_resets_on_a_new_baseline():
    m = StabilityMonitor(BASE, StabilityConfig(window=20, min_parts=10))
    for _ in range(15):
        m.add(None, None, None)
    assert m.report.parts == 0
    for _ in range(15):
        m.add(5.0, [3.0, 0.0], PartFigures(60.0, 0.0, 10.0))
    assert m.alert
    m.reset(BASE)
    assert not m.alert and m.report.index == 100 and m.report.parts == 0


def test_monitor_without_a_baseline_stays_silent():
    m = StabilityMonitor(None, StabilityConfig(window=20, min_parts=10))
    for _ in range(30):
        m.add(50.0, None, None)
    assert m.report.index == 100 and not m.alert


def test_part_figures_see_darkness_colour_and_blur():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    import cv2

    base, dark, blur = part_figures(img), part_figures((img * 0.6).astype(np.uint8)), part_figures(cv2.GaussianBlur(img, (5, 5), 2))
    assert dark.luminance < base.luminance * 0.65
    assert blur.sharpness < base.sharpness / 4
    red = img.copy()
    red[..., 0] = 255
    assert part_figures(red).color_balance > base.color_balance


def test_drift_figures_wait_until_after_the_verdict(bundle_dir, test_images, monkeypatch):
    """inspect() decides without the drift figures (they decide nothing); the first read computes them, once, from
    the crop the model saw: the station reads them after the actuator has the verdict."""
    import serving.station.inspect as ins
    from serving.engine.anomaly import AnomalyEngine
    from serving.gate.rules import GateRules
    from serving.images import read_image

    calls = []
    monkeypatch.setattr(ins, "part_figures", lambda crop: calls.append(crop.shape) or part_figures(crop))
    engine = AnomalyEngine.load(bundle_dir)
    rules = GateRules().with_calibration(engine.thresholds.image, engine.thresholds.pixel)
    insp = ins.inspect(engine, rules, read_image(sorted(test_images.rglob("*.png"))[0]))
    assert insp.decision.verdict in ("PASS", "FAIL") and calls == []
    assert insp.figures == part_figures(insp.result.crop) and insp.figures.luminance > 0
    insp.figures
    assert len(calls) == 1
    assert ins.inspect(engine, rules, None).figures is None  # no frame, no crop: no figures, and no error
