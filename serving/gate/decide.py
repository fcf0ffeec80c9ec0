"""The deterministic PASS/FAIL gate: a pure function of its inputs and rules.

``decide(inputs, rules)`` looks at nothing else -- no clock, no globals -- so the same
inputs always give the same verdict, and every verdict names the rule that decided it.
The station, ``lineguard-station replay`` and ``lineguard evaluate`` all decide here.
Rules are checked in a fixed order:

1. fail-safe: the inspection itself failed (corrupt frame, engine error, deadline
   missed, missing frame) -> the configured policy, default reject;
2. SOP overrides (a quarantine that fails everything, an engineer's bypass, a stricter
   score limit);
3. detector classes at or above their confidence;
4. anomaly: score above the threshold AND area above the minimum, persistent in N of
   the last M frames.

>>> rules = GateRules(image_threshold=1.0, pixel_threshold=0.5)
>>> decide(GateInput(score=2.0, area_px=10.0), rules).verdict
'FAIL'
>>> decide(GateInput(score=0.5, area_px=0.0), rules).rule
'anomaly.score'
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

from serving.gate.rules import Detection, GateRules


@dataclass(frozen=True)
class GateInput:
    """What one frame brings to the gate; ``history`` = anomalous flags of the previous frames, oldest first."""

    score: float | None = None
    area_px: float | None = None
    detections: tuple[Detection, ...] = ()
    history: tuple[bool, ...] = ()
    error: str | None = None
    error_detail: str = ""


@dataclass(frozen=True)
class Decision:
    """The verdict, the rule that decided it, and why."""

    verdict: Literal["PASS", "FAIL"]
    rule: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    anomalous: bool = False
    class_name: str | None = None  #: the defect class: the detector's that decided, else its most confident


class History:
    """The anomalous flags of the last M-1 parts, for N-of-M persistence (kept by whoever replays parts in order)."""

    def __init__(self, persistence_m: int = 1) -> None:
        self._flags: deque[bool] = deque(maxlen=max(persistence_m - 1, 1))

    def window(self) -> tuple[bool, ...]:
        """The flags the next decision sees, oldest first."""
        return tuple(self._flags)

    def push(self, decision: Decision) -> None:
        """Remember whether the part just decided was anomalous."""
        self._flags.append(decision.anomalous)

    def resize(self, persistence_m: int) -> None:
        """Keep the newest flags under a new window length."""
        self._flags = deque(self._flags, maxlen=max(persistence_m - 1, 1))

    @property
    def maxlen(self) -> int:
        """How many past parts are kept."""
        return self._flags.maxlen or 0


def decide(inp: GateInput, rules: GateRules) -> Decision:
    """PASS or FAIL for one frame (see module doc for the rule order); ``rules`` must carry both thresholds.

    The decision names the defect class where the detector saw one: the class whose rule decided, else the
    most confident detection (an anomaly FAIL with a likely class, or a PASS whose box stayed below its limit).
    """
    d = _decide(inp, rules)
    if d.class_name is None and inp.detections:
        top = max(inp.detections, key=lambda x: (x.confidence, x.class_name))
        d = replace(d, class_name=top.class_name)
    return d


def _decide(inp: GateInput, rules: GateRules) -> Decision:
    if not rules.resolved:
        raise ValueError("gate rules need both thresholds; call rules.with_calibration(...) with the bundle's")
    if inp.error is not None or inp.score is None:
        kind = inp.error or "missing_frame"
        verdict = "FAIL" if rules.on_error == "reject" else "PASS"
        return Decision(verdict, f"fail_safe.{kind}", (f"inspection failed: {kind} {inp.error_detail}".strip(),
                                                      f"policy on_error={rules.on_error}"))
    area = inp.area_px or 0.0
    anomalous = inp.score > rules.image_threshold and area >= rules.min_area
    for sop in rules.sop:
        if not sop.enabled:
            continue
        if sop.action == "fail_all":
            return Decision("FAIL", f"sop.{sop.name}", (f"SOP '{sop.name}': fail all parts",), anomalous)
        if sop.action == "pass_all":
            return Decision("PASS", f"sop.{sop.name}", (f"SOP '{sop.name}': bypass, pass all parts",), anomalous)
        if sop.action == "fail_above_score" and inp.score > sop.value:
            return Decision("FAIL", f"sop.{sop.name}", (f"SOP '{sop.name}': score {inp.score:.4g} > {sop.value:.4g}",), anomalous)
    for det in sorted(inp.detections, key=lambda d: (-d.confidence, d.class_name)):
        limit = rules.class_confidence.get(det.class_name)
        if limit is not None and det.confidence >= limit:
            return Decision("FAIL", f"detector.{det.class_name}",
                            (f"detected {det.class_name} at {det.confidence:.2f} >= {limit:.2f}",), anomalous,
                            det.class_name)
    if inp.score <= rules.image_threshold:
        return Decision("PASS", "anomaly.score", (f"score {inp.score:.4g} <= threshold {rules.image_threshold:.4g}",), False)
    if area < rules.min_area:
        return Decision("PASS", "anomaly.min_area",
                        (f"score {inp.score:.4g} > threshold but area {area:.0f} px < minimum {rules.min_area:.0f} px",), False)
    window = (*inp.history[-(rules.persistence_m - 1):], True) if rules.persistence_m > 1 else (True,)
    hits = sum(window)
    if hits < rules.persistence_n:
        return Decision("PASS", "anomaly.persistence",
                        (f"anomalous in {hits} of the last {len(window)} frames, {rules.persistence_n} needed",), True)
    return Decision("FAIL", "anomaly", (f"score {inp.score:.4g} > threshold {rules.image_threshold:.4g}",
                                        f"area {area:.0f} px >= {rules.min_area:.0f} px",
                                        f"anomalous in {hits} of the last {len(window)} frames"), True)
