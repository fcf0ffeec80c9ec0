"""Recalibration captures: N parts or M minutes of current production kept as candidate normals.

A capture tags the parts it takes (their records carry its id and always keep their pictures); the
operator then confirms them as normal in bulk and excludes single parts. Candidates that stand out
from the rest of the capture *and* score above the running threshold are flagged for a second look:
after a lighting change every new normal may score above the old threshold, so the threshold alone
cannot tell a defect among them; standing out from the capture's own scores can.

>>> flag_outliers([1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 9.0], threshold=2.0)
[False, False, False, False, False, False, True]
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, model_validator

from serving.strict import StrictModel, field_error

#: robust z (median / MAD) above which a candidate stands out from its capture
OUTLIER_Z = 4.0


class CaptureRequest(StrictModel):
    """Start a capture: stop after ``parts`` parts or ``minutes`` minutes, whichever comes first."""

    parts: int | None = Field(None, ge=10, le=20_000, description="candidate normals to capture")
    minutes: float | None = Field(None, gt=0, le=480, description="how long to capture")

    @model_validator(mode="after")
    def _some_limit(self) -> "CaptureRequest":
        if self.parts is None and self.minutes is None:
            raise field_error("parts", "give parts, minutes or both: a capture needs an end", None)
        return self


@dataclass
class Capture:
    """One capture in progress or done."""

    id: str
    started_by: str
    started_at: float
    target_parts: int | None
    until: float | None
    count: int = 0
    done: bool = False
    confirmed_by: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(cls, req: CaptureRequest, user: str, now: float | None = None) -> "Capture":
        """A new capture with a fresh id."""
        now = time.time() if now is None else now
        cid = f"cap-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"
        return cls(cid, user, now, req.parts, now + req.minutes * 60 if req.minutes else None)

    def take(self, now: float | None = None) -> bool:
        """Whether the next inspected part belongs to this capture (counts it; ends the capture at its limit)."""
        now = time.time() if now is None else now
        with self._lock:
            if self.done or (self.until is not None and now >= self.until):
                self.done = True
                return False
            self.count += 1
            if self.target_parts is not None and self.count >= self.target_parts:
                self.done = True
            return True

    def stop(self) -> None:
        """End the capture now (an engineer has enough)."""
        with self._lock:
            self.done = True


def flag_outliers(scores: list[float], threshold: float, z: float = OUTLIER_Z) -> list[bool]:
    """Which candidate normals need a second look: above ``threshold`` and a robust outlier of the capture."""
    s = np.asarray(scores, np.float64)
    if s.size == 0:
        return []
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med))) * 1.4826
    spread = max(mad, 0.05 * abs(med), 1e-12)  # a capture of near-identical parts must not flag every small wobble
    return [bool(v > threshold and (v - med) / spread > z) for v in s]
