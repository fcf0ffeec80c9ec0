"""The gate: unit cases and properties (hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serving.gate import ERROR_KINDS, Detection, GateInput, GateRules, SopRule, decide

RULES = GateRules(image_threshold=10.0, pixel_threshold=5.0, min_area_px=50.0)


def test_threshold_area_and_rule_names():
    assert decide(GateInput(score=9.0, area_px=500.0), RULES).rule == "anomaly.score"
    d = decide(GateInput(score=11.0, area_px=10.0), RULES)
    assert (d.verdict, d.rule) == ("PASS", "anomaly.min_area")
    d = decide(GateInput(score=11.0, area_px=60.0), RULES)
    assert (d.verdict, d.rule) == ("FAIL", "anomaly")


def test_area_in_mm2_uses_the_scale():
    rules = GateRules(image_threshold=1.0, pixel_threshold=1.0, min_area_mm2=2.0, px_per_mm=10.0)  # 200 px
    assert decide(GateInput(score=2.0, area_px=199.0), rules).verdict == "PASS"
    assert decide(GateInput(score=2.0, area_px=200.0), rules).verdict == "FAIL"
    with pytest.raises(ValidationError, match="px_per_mm"):
        GateRules(image_threshold=1.0, pixel_threshold=1.0, min_area_mm2=2.0)


def test_persistence_n_of_m():
    rules = RULES.model_copy(update={"persistence_n": 2, "persistence_m": 3})
    hit = GateInput(score=20.0, area_px=100.0, history=(False, False))
    assert decide(hit, rules).rule == "anomaly.persistence"
    assert decide(GateInput(score=20.0, area_px=100.0, history=(True, False)), rules).verdict == "FAIL"
    # only the last m-1 history entries count
    assert decide(GateInput(score=20.0, area_px=100.0, history=(True, False, False)), rules).verdict == "PASS"


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_fail_safe_rejects_by_default_with_the_reason(kind):
    d = decide(GateInput(error=kind, error_detail="cam0"), RULES)
    assert (d.verdict, d.rule) == ("FAIL", f"fail_safe.{kind}") and kind in d.reasons[0]
    assert decide(GateInput(error=kind), RULES.model_copy(update={"on_error": "pass"})).verdict == "PASS"
    assert decide(GateInput(), RULES).rule == "fail_safe.missing_frame"


def test_sop_overrides_and_detector_classes():
    quarantine = RULES.model_copy(update={"sop": (SopRule(name="lot42", action="fail_all"),)})
    assert decide(GateInput(score=0.0, area_px=0.0), quarantine).rule == "sop.lot42"
    off = RULES.model_copy(update={"sop": (SopRule(name="lot42", action="fail_all", enabled=False),)})
    assert decide(GateInput(score=0.0, area_px=0.0), off).verdict == "PASS"
    strict = RULES.model_copy(update={"sop": (SopRule(name="strict", action="fail_above_score", value=5.0),)})
    assert decide(GateInput(score=6.0, area_px=0.0), strict).rule == "sop.strict"
    det = RULES.model_copy(update={"class_confidence": {"crack": 0.6}})
    inp = GateInput(score=1.0, area_px=0.0, detections=(Detection(class_name="crack", confidence=0.7),
                                                        Detection(class_name="dust", confidence=0.99)))
    assert decide(inp, det).rule == "detector.crack"
    with pytest.raises(ValidationError, match="value"):
        SopRule(name="x", action="fail_above_score")


scores = st.floats(min_value=0, max_value=100, allow_nan=False)
areas = st.floats(min_value=0, max_value=10_000, allow_nan=False)
histories = st.lists(st.booleans(), max_size=6).map(tuple)
rules_st = st.builds(
    GateRules,
    image_threshold=st.floats(min_value=1e-6, max_value=100, allow_nan=False),
    pixel_threshold=st.just(1.0),
    min_area_px=st.floats(min_value=0, max_value=5000, allow_nan=False),
    persistence_n=st.just(1) | st.just(2),
    persistence_m=st.just(3),
    sop=st.sampled_from([(), (SopRule(name="s", action="fail_above_score", value=50.0),)]),
)


@settings(max_examples=300, deadline=None)
@given(rules_st, scores, areas, histories)
def test_same_inputs_same_verdict_and_a_named_rule(rules, score, area, hist):
    inp = GateInput(score=score, area_px=area, history=hist)
    a, b = decide(inp, rules), decide(GateInput(score=score, area_px=area, history=hist), rules)
    assert a == b
    assert a.rule and a.reasons and a.verdict in ("PASS", "FAIL")


@settings(max_examples=300, deadline=None)
@given(rules_st, scores, scores, areas, areas, histories)
def test_more_score_or_area_never_turns_fail_into_pass(rules, s1, s2, a1, a2, hist):
    lo = decide(GateInput(score=min(s1, s2), area_px=min(a1, a2), history=hist), rules)
    hi = decide(GateInput(score=max(s1, s2), area_px=max(a1, a2), history=hist), rules)
    if lo.verdict == "FAIL":
        assert hi.verdict == "FAIL"
