"""The deterministic PASS/FAIL gate: a pure function of its inputs and rules.

``decide(inputs, rules)`` looks at nothing else -- no clock, no globals -- so the same
inputs always give the same verdict, and every verdict names the rule that decided it.
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

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ERROR_KINDS = ("corrupt_frame", "wrong_frame", "engine_error", "deadline_missed", "missing_frame")


class Detection(BaseModel):
    """One detector box: class and confidence."""

    model_config = ConfigDict(frozen=True)
    class_name: str
    confidence: float = Field(ge=0.0, le=1.0)


class SopRule(BaseModel):
    """A standard-operating-procedure override, set by an engineer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    action: Literal["fail_all", "pass_all", "fail_above_score"]
    value: float | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _value_needed(self) -> "SopRule":
        if self.action == "fail_above_score" and self.value is None:
            raise ValueError(f"sop rule {self.name!r}: action fail_above_score needs 'value'")
        return self


class GateRules(BaseModel):
    """Everything the gate decides by: bundle calibration plus the station's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    image_threshold: float
    pixel_threshold: float
    min_area_px: float = Field(0.0, ge=0.0)
    min_area_mm2: float | None = Field(None, ge=0.0)
    px_per_mm: float | None = Field(None, gt=0.0)
    persistence_n: int = Field(1, ge=1)
    persistence_m: int = Field(1, ge=1)
    class_confidence: dict[str, float] = {}
    sop: tuple[SopRule, ...] = ()
    on_error: Literal["reject", "pass"] = "reject"

    @model_validator(mode="after")
    def _consistent(self) -> "GateRules":
        if self.persistence_n > self.persistence_m:
            raise ValueError(f"persistence_n ({self.persistence_n}) cannot exceed persistence_m ({self.persistence_m})")
        if self.min_area_mm2 is not None and self.px_per_mm is None:
            raise ValueError("min_area_mm2 needs px_per_mm (the camera's scale) to convert to pixels")
        return self

    @property
    def min_area(self) -> float:
        """Minimum anomalous area in source pixels."""
        if self.min_area_mm2 is not None:
            return max(self.min_area_px, self.min_area_mm2 * self.px_per_mm**2)
        return self.min_area_px


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


def decide(inp: GateInput, rules: GateRules) -> Decision:
    """PASS or FAIL for one frame (see module doc for the rule order)."""
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
                            (f"detected {det.class_name} at {det.confidence:.2f} >= {limit:.2f}",), anomalous)
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
