"""The gate's rules: one model, used by the station config, the API and the pure gate alike.

Every cross-field check lives here, so a config that the gate would refuse is refused when it
is loaded, with the field named, before anything else starts.

>>> from serving.strict import describe_errors
>>> try:
...     GateRules(persistence_n=3, persistence_m=2)
... except ValueError as exc:
...     print(describe_errors(exc, prefix="gate"))
gate.persistence_n: persistence_n (3) cannot exceed persistence_m (2): a part needs N anomalous frames out of the last M
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from serving.strict import StrictModel, field_error

ERROR_KINDS = ("corrupt_frame", "wrong_frame", "engine_error", "deadline_missed", "missing_frame")


class Detection(StrictModel):
    """One detector box: class, confidence and, where known, the box in source pixels (x, y, w, h)."""

    model_config = {"frozen": True}
    class_name: str = Field(min_length=1)
    confidence: float = Field(ge=0.0, le=1.0)
    box: tuple[float, float, float, float] | None = None


class SopRule(StrictModel):
    """A standard-operating-procedure override, set by an engineer."""

    model_config = {"frozen": True}
    name: str = Field(min_length=1, max_length=64)
    action: Literal["fail_all", "pass_all", "fail_above_score"]
    value: float | None = Field(None, gt=0)
    enabled: bool = True

    @model_validator(mode="after")
    def _value_needed(self) -> "SopRule":
        if self.action == "fail_above_score" and self.value is None:
            raise ValueError(f"sop rule {self.name!r}: action fail_above_score needs 'value'")
        return self


class GateRules(StrictModel):
    """Everything the gate decides by. Thresholds left ``None`` come from the bundle's calibration."""

    model_config = {"frozen": True}
    image_threshold: float | None = Field(None, gt=0, description="null = the bundle's calibrated image threshold")
    pixel_threshold: float | None = Field(None, gt=0, description="null = the bundle's calibrated pixel threshold")
    min_area_px: float = Field(0.0, ge=0, description="anomalous area above the pixel threshold, in source pixels")
    min_area_mm2: float | None = Field(None, ge=0, description="the same in mm² (needs px_per_mm)")
    px_per_mm: float | None = Field(None, gt=0, description="camera scale at the part")
    persistence_n: int = Field(1, ge=1, description="FAIL when anomalous in N of the last M frames")
    persistence_m: int = Field(1, ge=1, le=100)
    class_confidence: dict[str, float] = Field({}, description="detector class -> minimum confidence that fails a part")
    sop: tuple[SopRule, ...] = ()
    on_error: Literal["reject", "pass"] = Field("reject", description="verdict for a part whose inspection failed")
    deadline_ms: float = Field(200.0, gt=0, description="a decision later than this after the trigger fails safe")

    @field_validator("class_confidence")
    @classmethod
    def _confidences(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: c for k, c in v.items() if not 0.0 <= c <= 1.0}
        if bad:
            raise ValueError(f"confidences must lie in [0, 1]; got {bad}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "GateRules":
        if self.persistence_n > self.persistence_m:
            raise field_error("persistence_n", f"persistence_n ({self.persistence_n}) cannot exceed persistence_m "
                                                f"({self.persistence_m}): a part needs N anomalous frames out of the last M",
                               {"persistence_n": self.persistence_n, "persistence_m": self.persistence_m})
        if self.min_area_mm2 is not None and self.px_per_mm is None:
            raise field_error("px_per_mm", "min_area_mm2 needs px_per_mm (the camera's scale) to convert to pixels",
                               self.px_per_mm)
        names = [s.name for s in self.sop]
        if len(set(names)) != len(names):
            raise field_error("sop", f"SOP rule names must be unique; got {names}", names)
        return self

    @property
    def min_area(self) -> float:
        """Minimum anomalous area in source pixels."""
        if self.min_area_mm2 is not None:
            return max(self.min_area_px, self.min_area_mm2 * self.px_per_mm**2)
        return self.min_area_px

    @property
    def resolved(self) -> bool:
        """True when both thresholds are set (the pure gate needs them)."""
        return self.image_threshold is not None and self.pixel_threshold is not None

    def with_detector(self, confidence: dict[str, float]) -> "GateRules":
        """These rules with a detector bundle's deployed per-class confidences where the config sets none."""
        return self.model_copy(update={"class_confidence": {**confidence, **self.class_confidence}})

    def with_calibration(self, image_threshold: float, pixel_threshold: float) -> "GateRules":
        """These rules with the bundle's calibrated thresholds filled in where none is set."""
        return self.model_copy(update={
            "image_threshold": self.image_threshold if self.image_threshold is not None else image_threshold,
            "pixel_threshold": self.pixel_threshold if self.pixel_threshold is not None else pixel_threshold,
        })
