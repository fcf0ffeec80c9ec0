"""What the station writes down about each part: the typed record, its evidence images, its pulse's outcome.

>>> rec = record_of(frame, insp, act, "line-1", "boot", 12.3)   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from serving.engine.explain_picture import encode_jpeg, panel
from serving.engine.preprocess import Roi, crop_roi, heatmap_overlay, resize
from serving.errors import ImageError
from serving.evidence.record import ActuationOutcome, InspectionRecord
from serving.explanation import Explanation
from serving.evidence.store import EvidenceStore
from serving.images import to_rgb
from serving.lineio.actuation.pulses import PulseReport
from serving.lineio.actuation.scheduler import ActuationResult
from serving.lineio.frames import Frame
from serving.station.inspect import Inspection

log = logging.getLogger("lineguard.station")


def record_of(frame: Frame, insp: Inspection, act: ActuationResult, station_id: str, boot_id: str,
              bundle_version: str, latency_ms: dict[str, float]) -> InspectionRecord:
    """The part's record, built once."""
    d, f = insp.decision, insp.figures
    emb = insp.result.embedding if insp.result is not None else None
    return InspectionRecord(
        station_id=station_id, boot_id=boot_id, seq=frame.seq, source=frame.name, wall_time=time.time(),
        t_trigger_ns=frame.t_trigger_ns, bundle_version=bundle_version, score=insp.score, area_px=insp.area_px,
        verdict=d.verdict, rule=d.rule, reasons=list(d.reasons), latency_ms=latency_ms,
        actuation=ActuationOutcome(scheduled=act.scheduled, late=act.late, pulse_at_ns=act.pulse_at_ns, note=act.note),
        embedding=None if emb is None else [round(float(v), 4) for v in emb],
        luminance=f.luminance if f else None, color_balance=f.color_balance if f else None,
        sharpness=f.sharpness if f else None, detections=list(insp.detections), class_name=d.class_name)


@dataclass
class PartView:
    """What a person sees of one part: its ROI crop at display resolution and the anomaly map over it.

    Kept for the last part in memory (the page shows every verdict with its own part) and written, as PNGs,
    into the evidence of the parts that are kept. Cropping and rendering happen only when asked, off the
    per-part path for parts nobody looks at. A FAIL is also explained (:meth:`explain`): its side-by-side
    picture is kept here for the live page and written, as a JPEG, into its evidence.
    """

    image: np.ndarray
    roi: Roi | None
    engine_crop: np.ndarray
    anomaly_map: np.ndarray
    pixel_threshold: float
    max_px: int
    detections: tuple = ()
    explanation: Explanation | None = None
    explain_picture: np.ndarray | None = None

    @classmethod
    def of(cls, image: np.ndarray | None, insp: Inspection, roi: Roi | None, pixel_threshold: float,
           max_px: int) -> "PartView | None":
        """The view of an inspected part (None when the inspection produced no map)."""
        if insp.result is None or image is None:
            return None
        return cls(image, roi, insp.result.crop, insp.result.anomaly_map, pixel_threshold, max_px, insp.detections)

    @functools.cached_property
    def crop(self) -> np.ndarray:
        """The ROI of the source frame, at most ``max_px`` on its long side."""
        try:
            crop = crop_roi(to_rgb(self.image), self.roi)
        except Exception:  # noqa: BLE001 - the engine's own crop is still worth showing
            crop = self.engine_crop
        scale = min(1.0, self.max_px / max(crop.shape[:2]))
        if scale < 1.0:
            crop = resize(crop, round(crop.shape[0] * scale), round(crop.shape[1] * scale))
        return crop

    def overlay(self) -> np.ndarray:
        """The heatmap over the crop, at the crop's resolution, with the detector's boxes and classes (rendered
        once: the evidence, the explanation and the live page share it; callers do not draw on it)."""
        return self._overlay

    @functools.cached_property
    def _overlay(self) -> np.ndarray:
        out = heatmap_overlay(self.crop, self.anomaly_map, self.pixel_threshold)
        if self.detections:
            ox, oy = (self.roi.x, self.roi.y) if self.roi else (0, 0)
            src_w = self.roi.w if self.roi else self.image.shape[1]
            k = out.shape[1] / src_w
            for d in self.detections:
                x, y, w, h = d.box
                p0, p1 = (round((x - ox) * k), round((y - oy) * k)), (round((x - ox + w) * k), round((y - oy + h) * k))
                cv2.rectangle(out, p0, p1, (255, 255, 255), 2)
                cv2.putText(out, f"{d.class_name} {d.confidence:.2f}", (p0[0], max(12, p0[1] - 4)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        return out

    def png(self, kind: str) -> bytes:
        """``crop`` or ``overlay`` as PNG bytes."""
        return _png(self.crop if kind == "crop" else self.overlay())

    def explain(self, engine, result) -> tuple[Explanation | None, bytes | None]:
        """Explain this part with ``engine``'s bundle (region, 3 normal patches, nearest normal) and render its
        picture: (explanation, picture as JPEG), both also kept here for the live page. (None, None) when it
        cannot be explained -- logged; the record is kept all the same."""
        try:
            explainer = engine.explainer
            why = explainer.explain(result, self.pixel_threshold)
            picture, why = explainer.render(self.overlay(), why)
            data = encode_jpeg(picture)
        except Exception as exc:  # noqa: BLE001 - an explanation is never worth a part's record
            _warn_once(f"parts cannot be explained with bundle {engine.bundle.manifest.bundle_version}: "
                       f"{type(exc).__name__}: {exc}")
            return None, None
        self.explanation, self.explain_picture = why, picture
        return why, data

    def explain_jpeg(self, name: str) -> bytes:
        """A panel of this part's explanation picture as JPEG (``LookupError`` when it has none)."""
        if self.explain_picture is None or self.explanation is None:
            raise LookupError("this part has no explanation (only FAIL parts are explained)")
        return encode_jpeg(panel(self.explain_picture, self.explanation, name))

    def pngs(self) -> tuple[bytes | None, bytes | None]:
        """(crop PNG, overlay PNG); (None, None) if rendering fails -- the record is kept all the same."""
        try:
            return self.png("crop"), self.png("overlay")
        except Exception:  # noqa: BLE001 - never lose the record over its picture
            log.exception("evidence images could not be rendered")
            return None, None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log a problem once per station run, not once per part."""
    if message not in _warned and len(_warned) < 100:
        _warned.add(message)
        log.warning("%s", message)


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

    #: a pulse can end before its part's record is stored (the after-part thread writes it): its outcome waits
    #: this long for the record, then is dropped (the pulse's alarms have been raised already)
    WAIT_FOR_RECORD_S = 60.0

    def __init__(self, evidence: EvidenceStore, boot_id: str) -> None:
        self.evidence, self.boot_id = evidence, boot_id
        self._reports: deque[tuple[PulseReport, float]] = deque()

    def report(self, r: PulseReport) -> None:
        """Called on the actuator's thread: never make it wait for the database."""
        self._reports.append((r, time.monotonic()))

    def flush(self) -> None:
        """Write each finished pulse's outcome into its part's record (housekeeping thread)."""
        later = []
        while self._reports:
            r, seen = self._reports.popleft()
            rec = self.evidence.query("boot_id=? AND seq=?", (self.boot_id, r.seq), limit=1)
            if not rec:
                if time.monotonic() - seen < self.WAIT_FOR_RECORD_S:
                    later.append((r, seen))
                continue
            act = rec[0].actuation or ActuationOutcome(scheduled=True)
            note = "; ".join(n for n in (act.note, r.note) if n)
            self.evidence.update_actuation(self.boot_id, r.seq, act.model_copy(update={
                "pulse_ok": not (r.late or r.short or r.missed), "start_error_ms": r.start_error_ms,
                "width_ms": r.width_ms, "note": note}))
        self._reports.extend(later)


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()
