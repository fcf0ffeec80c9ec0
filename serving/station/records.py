"""What the station writes down about each part: the typed record, its evidence images, its pulse's outcome.

>>> rec = record_of(frame, insp, act, "line-1", "boot", 12.3)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections import deque

import cv2
import numpy as np

from serving.engine.preprocess import heatmap_overlay
from serving.errors import ImageError
from serving.evidence.record import ActuationOutcome, InspectionRecord
from serving.evidence.store import EvidenceStore
from serving.lineio.actuation.pulses import PulseReport
from serving.lineio.actuation.scheduler import ActuationResult
from serving.lineio.frames import Frame
from serving.station.inspect import Inspection

log = logging.getLogger("lineguard.station")


def record_of(frame: Frame, insp: Inspection, act: ActuationResult, station_id: str, boot_id: str,
              bundle_version: str, latency_ms: dict[str, float]) -> InspectionRecord:
    """The part's record, built once."""
    d = insp.decision
    return InspectionRecord(
        station_id=station_id, boot_id=boot_id, seq=frame.seq, source=frame.name, wall_time=time.time(),
        t_trigger_ns=frame.t_trigger_ns, bundle_version=bundle_version, score=insp.score, area_px=insp.area_px,
        verdict=d.verdict, rule=d.rule, reasons=list(d.reasons), latency_ms=latency_ms,
        actuation=ActuationOutcome(scheduled=act.scheduled, late=act.late, pulse_at_ns=act.pulse_at_ns, note=act.note))


def evidence_images(insp: Inspection, pixel_threshold: float) -> tuple[bytes | None, bytes | None]:
    """(crop PNG, heatmap overlay PNG) of an inspected part; (None, None) if there is nothing to show."""
    if insp.result is None:
        return None, None
    try:
        return _png(insp.result.crop), _png(heatmap_overlay(insp.result.crop, insp.result.anomaly_map, pixel_threshold))
    except Exception:  # noqa: BLE001 - never lose the record over its picture
        log.exception("evidence images could not be rendered")
        return None, None


def log_part(rec: InspectionRecord) -> None:
    """One console line per part."""
    act = rec.actuation
    pulse = "no pulse"
    if act is not None:
        pulse = "reject pulse scheduled" if act.scheduled else ("LATE: " + act.note if act.late else "no pulse")
    log.info("part %d %-4s %-22s score=%s area=%s px  %s  (%.1f ms)", rec.seq, rec.verdict, rec.rule,
             "n/a" if rec.score is None else f"{rec.score:.3f}",
             "n/a" if rec.area_px is None else f"{rec.area_px:.0f}", pulse, rec.latency_ms.get("total", 0.0))


class PulseRecorder:
    """Reject pulses' outcomes, handed over by the actuator's thread and written into their parts' records later."""

    def __init__(self, evidence: EvidenceStore, boot_id: str) -> None:
        self.evidence, self.boot_id = evidence, boot_id
        self._reports: deque[PulseReport] = deque()

    def report(self, r: PulseReport) -> None:
        """Called on the actuator's thread: never make it wait for the database."""
        self._reports.append(r)

    def flush(self) -> None:
        """Write each finished pulse's outcome into its part's record (housekeeping thread)."""
        while self._reports:
            r = self._reports.popleft()
            rec = self.evidence.query("boot_id=? AND seq=?", (self.boot_id, r.seq), limit=1)
            act = rec[0].actuation if rec and rec[0].actuation else ActuationOutcome(scheduled=True)
            note = "; ".join(n for n in (act.note, r.note) if n)
            self.evidence.update_actuation(self.boot_id, r.seq, act.model_copy(update={
                "pulse_ok": not (r.late or r.short or r.missed), "start_error_ms": r.start_error_ms,
                "width_ms": r.width_ms, "note": note}))


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()
