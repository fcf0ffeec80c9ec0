"""The station runtime: frame -> engine -> gate -> actuator, with evidence and metrics.

The orchestrator over rooms that do not know each other (engine, gate, line I/O, evidence).
One inspection thread takes frames from the capture queue and, per frame, inspects it
(:func:`serving.station.inspect.inspect`), hands the verdict to the actuator (which times the
pulse from the frame's trigger timestamp), then stores the typed record. No single bad frame,
engine fault or PLC outage stops the loop: each becomes a fail-safe verdict or an alarm.

>>> station = Station(load_config("station.example.yaml"))   # doctest: +SKIP
>>> station.start(); station.wait()                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from serving.alarms import Alarms
from serving.config import StationConfig
from serving.engine.anomaly import AnomalyEngine
from serving.engine.preprocess import Roi, heatmap_overlay
from serving.errors import ImageError, LineguardError
from serving.evidence.record import ActuationOutcome, InspectionRecord
from serving.evidence.store import EvidenceStore
from serving.gate import GateRules, History
from serving.lineio.actuation import make_backend
from serving.lineio.actuation.modbus_map import STATE_ALARM, STATE_NOT_INSPECTING, STATE_RUNNING, STATE_STOPPED
from serving.lineio.actuation.scheduler import Actuator
from serving.lineio.capture import FrameSource
from serving.lineio.frames import Frame
from serving.station.audit import AuditLog
from serving.station.housekeeping import Housekeeper
from serving.station.inspect import inspect
from serving.station.metrics import StationMetrics
from serving.station.sources import make_source

log = logging.getLogger("lineguard.station")


@dataclass
class LiveState:
    """What the operator page shows."""

    started_ns: int = field(default_factory=time.monotonic_ns)
    first_verdict_ms: float | None = None
    last: InspectionRecord | None = None
    counts: dict = field(default_factory=lambda: {"PASS": 0, "FAIL": 0})
    frames: int = 0
    running: bool = False
    finished: bool = False


class Station:
    """A running station built from its config; threads start in :meth:`start`."""

    def __init__(self, cfg: StationConfig, *, started_ns: int | None = None) -> None:
        self.cfg = cfg
        self.boot_id = uuid.uuid4().hex[:12]
        self.metrics = StationMetrics()
        self.alarms = Alarms(on_change=self.metrics.alarm)
        self.engine = self._open_engine(cfg.bundle)
        self.rules = cfg.gate.with_calibration(self.engine.thresholds.image, self.engine.thresholds.pixel)
        self.evidence = EvidenceStore(cfg.evidence, self.alarms, cfg.station_id)
        self.metrics.buffer_quota.set(cfg.evidence.quota_mb * 1024 * 1024)
        self.audit = AuditLog(cfg.api.audit_log)
        self.actuator = Actuator(make_backend(cfg.actuator), cfg.actuator, self.alarms, self.metrics,
                                 state=self.plc_state, on_pulse=self._on_pulse)
        first_seq = (self.evidence.scalar("SELECT COALESCE(MAX(seq), 0) FROM frames") or 0) + 1
        self.source, self.http_trigger = make_source(cfg, self.alarms, self.actuator, first_seq, self._on_unseen)
        self.history = History(cfg.gate.persistence_m)
        self.state = LiveState(started_ns=started_ns or time.monotonic_ns())
        self._pulse_reports: deque = deque()
        self.housekeeper = Housekeeper(self.evidence, cfg.evidence, self.alarms, self.metrics, self._record_pulses)
        self._lock = threading.Lock()  # what the inspection thread reads per frame
        self._control = threading.Lock()  # serialises engineers' changes (gate, bundle)
        self._stop = threading.Event()
        self._inspector = threading.Thread(target=self._inspect_loop, name="inspect", daemon=True)

    def _open_engine(self, path: str) -> AnomalyEngine:
        engine = AnomalyEngine.load(path)
        if self.cfg.roi:
            engine.roi = Roi.parse(self.cfg.roi)
        engine.warmup()
        return engine

    # ------------------------------------------------------------------ control
    def start(self) -> "Station":
        """Start the actuator, capture, inspection and housekeeping threads."""
        self.state.running = True
        self.actuator.start()
        self.source.start()
        self._inspector.start()
        self.housekeeper.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source ends (replay) or ``stop()``; True if finished."""
        self._inspector.join(timeout)
        return not self._inspector.is_alive()

    def stop(self, reason: str = "stopped") -> list[int]:
        """Stop capture and inspection, leave the outputs safe, close the evidence store.

        Returns the parts whose reject pulse had not run yet (logged and audited: check them by hand)."""
        self._stop.set()
        self.state.running = False
        self.source.stop()
        if self._inspector.is_alive():
            self._inspector.join(5)
        pending = self.actuator.close()
        self.housekeeper.stop()
        if pending:
            self.audit.append("station", "pulses_not_fired", {"reason": reason, "parts": pending})
        self.evidence.close()
        return pending

    def plc_state(self) -> int:
        """The station-state register: stopped, running, running with an alarm, or not inspecting."""
        if not self.state.running:
            return STATE_STOPPED
        if self.alarms.is_active("camera") or self.alarms.is_active("inspection"):
            return STATE_NOT_INSPECTING
        return STATE_ALARM if any(a.level == "error" for a in self.alarms.active()) else STATE_RUNNING

    def _on_unseen(self, why: str) -> None:
        self.alarms.event("unseen", f"free-run: moments passed uninspected ({why})")
        if self.cfg.actuator.late_policy == "stop_line" and not self.actuator.worker.stop_line_latched:
            self.actuator.stop_line(0, f"camera cannot see the line: {why}")

    def _on_pulse(self, report) -> None:
        # called on the actuator's thread: never make it wait for the database
        self._pulse_reports.append(report)

    def _record_pulses(self) -> None:
        """Write how each finished reject pulse went into its part's record (housekeeping thread)."""
        while self._pulse_reports:
            self._record_pulse(self._pulse_reports.popleft())

    def _record_pulse(self, report) -> None:
        rec = self.evidence.query("boot_id=? AND seq=?", (self.boot_id, report.seq), limit=1)
        act = rec[0].actuation if rec and rec[0].actuation else ActuationOutcome(scheduled=True)
        note = "; ".join(n for n in (act.note, report.note) if n)
        self.evidence.update_actuation(self.boot_id, report.seq, act.model_copy(update={
            "pulse_ok": not (report.late or report.short or report.missed), "start_error_ms": report.start_error_ms,
            "width_ms": report.width_ms, "note": note}))

    def reload_bundle(self, path: str, user: str) -> str:
        """Verify and swap in a new bundle; on any failure the running one stays. Returns its version."""
        with self._control:
            try:
                engine = self._open_engine(path)
            except LineguardError as exc:
                self.audit.append(user, "bundle_refused", {"path": path, "reason": str(exc)})
                self.alarms.raise_("bundle", f"new bundle refused, still running "
                                             f"{self.engine.bundle.manifest.bundle_version}: {exc}", "warning")
                raise
            rules = self.cfg.gate.with_calibration(engine.thresholds.image, engine.thresholds.pixel)
            version = engine.bundle.manifest.bundle_version
            self.audit.append(user, "bundle_loaded", {"path": path, "bundle_version": version})  # audit first
            with self._lock:
                self.engine, self.rules = engine, rules
        self.alarms.clear("bundle")
        return version

    def update_gate(self, changes: dict, user: str) -> GateRules:
        """Change gate settings (engineer); validated as a whole, audited, effective from the next frame."""
        with self._control:
            old = self.cfg.gate.model_dump(mode="json")
            new_cfg = GateRules.model_validate({**old, **changes})
            rules = new_cfg.with_calibration(self.engine.thresholds.image, self.engine.thresholds.pixel)
            self.audit.append(user, "gate_changed", {"before": {k: old[k] for k in changes}, "after": changes})
            with self._lock:
                self.cfg.gate, self.rules = new_cfg, rules
                self.history.resize(new_cfg.persistence_m)  # a longer persistence window needs a longer history
        return rules

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame) -> InspectionRecord:
        """One frame through the whole station; returns its stored record."""
        t0 = frame.t_trigger_ns
        with self._lock:
            engine, rules, history = self.engine, self.rules, self.history.window()
        insp = inspect(engine, rules, frame.image, history=history, source=frame.name, error=frame.error,
                       detail=frame.error_detail, t_trigger_ns=t0)
        decision = insp.decision
        with self._lock:
            self.history.push(decision)
        t = time.monotonic_ns()
        act = self.actuator.submit(frame.seq, decision.verdict, t0, fail_safe=decision.rule.startswith("fail_safe"))
        now = time.monotonic_ns()
        lat = {"capture": (frame.t_capture_ns - t0) / 1e6, **insp.latency_ms,
               "actuation": (now - t) / 1e6, "total": (now - t0) / 1e6}
        rec = InspectionRecord(
            station_id=self.cfg.station_id, boot_id=self.boot_id, seq=frame.seq, source=frame.name,
            wall_time=time.time(), t_trigger_ns=t0, bundle_version=engine.bundle.manifest.bundle_version,
            score=insp.score, area_px=insp.area_px, verdict=decision.verdict, rule=decision.rule,
            reasons=list(decision.reasons), latency_ms=lat,
            actuation=ActuationOutcome(scheduled=act.scheduled, late=act.late, pulse_at_ns=act.pulse_at_ns, note=act.note))
        crop_png = overlay_png = None
        if insp.result is not None and (decision.verdict == "FAIL" or self._sample_pass(frame.seq)):
            try:
                crop_png = _png(insp.result.crop)
                overlay_png = _png(heatmap_overlay(insp.result.crop, insp.result.anomaly_map, rules.pixel_threshold))
            except Exception:  # noqa: BLE001 - never lose the record over its picture
                log.exception("part %d: evidence images could not be rendered", frame.seq)
                crop_png = overlay_png = None
        rec.id = self.evidence.record(rec, crop_png, overlay_png)
        self._account(rec)
        return rec

    def _fail_safe(self, frame: Frame, detail: str) -> None:
        insp = inspect(self.engine, self.rules, None, error="engine_error", detail=detail)
        try:
            self.actuator.submit(frame.seq, insp.decision.verdict, frame.t_trigger_ns, fail_safe=True)
        finally:
            self.evidence.record(InspectionRecord(
                station_id=self.cfg.station_id, boot_id=self.boot_id, seq=frame.seq, source=frame.name,
                wall_time=time.time(), t_trigger_ns=frame.t_trigger_ns, verdict=insp.decision.verdict,
                rule=insp.decision.rule, reasons=list(insp.decision.reasons)))

    def _sample_pass(self, seq: int) -> bool:
        rate = self.cfg.evidence.pass_sample_rate
        return rate > 0 and (seq % max(1, round(1 / rate))) == 0

    def _account(self, rec: InspectionRecord) -> None:
        self.metrics.count(rec)
        self.metrics.dropped.set(self.source.dropped)
        self.metrics.late_frames.set(self.source.late)
        with self._lock:
            self.state.frames += 1
            self.state.counts[rec.verdict] = self.state.counts.get(rec.verdict, 0) + 1
            self.state.last = rec
            if self.state.first_verdict_ms is None:
                self.state.first_verdict_ms = (time.monotonic_ns() - self.state.started_ns) / 1e6
        act = rec.actuation
        pulse = "reject pulse scheduled" if act.scheduled else ("LATE: " + act.note if act.late else "no pulse")
        log.info("part %d %-4s %-22s score=%s area=%s px  %s  (%.1f ms)", rec.seq, rec.verdict, rec.rule,
                 "n/a" if rec.score is None else f"{rec.score:.3f}",
                 "n/a" if rec.area_px is None else f"{rec.area_px:.0f}", pulse, rec.latency_ms["total"])

    def _inspect_loop(self) -> None:
        while not self._stop.is_set():
            frame = self.source.get()
            if frame is None:
                break
            try:
                self.process(frame)
            except Exception as exc:  # noqa: BLE001 - last line of defence: reject the part, record it, go on
                log.exception("part %s: inspection failed unexpectedly", frame.seq)
                self.alarms.raise_("inspection", f"part {frame.seq}: unexpected failure; see the log")
                self._fail_safe(frame, f"{type(exc).__name__}: {exc}")
        self.actuator.wait_idle(5.0)
        self.state.finished = True


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()
