"""The station runtime: frame -> ROI -> engine -> gate -> actuator, with evidence and metrics.

One inspection thread takes frames from the capture queue and, per frame, records the
stage latencies, asks the gate, hands the verdict to the actuator (which times the pulse
from the frame's trigger timestamp), then stores the evidence. No single bad frame, engine
fault or PLC outage stops the loop: each becomes a fail-safe verdict or an alarm.

>>> station = Station(load_config("station.example.yaml"))   # doctest: +SKIP
>>> station.start(); station.wait()                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from serving.actuation import Actuator, make_backend
from serving.alarms import Alarms
from serving.audit import AuditLog
from serving.config import GateConfig, StationConfig
from serving.engine import AnomalyEngine
from serving.errors import ImageError, LineguardError, RoiError
from serving.evidence import EvidenceStore
from serving.gate import GateInput, GateRules, decide
from serving.images import to_rgb
from serving.metrics import StationMetrics
from serving.preprocess import Roi, anomaly_area, display_crop, heatmap_overlay, normalize
from serving.sources import FrameSource, FreeRunTrigger, HttpTrigger, ModbusTrigger, OpenCVGrabber, ReplayGrabber

log = logging.getLogger("lineguard.station")


def gate_rules(gate: GateConfig, engine: AnomalyEngine) -> GateRules:
    """The gate's rules: the bundle's calibrated thresholds, overridden by the station config where set."""
    t = engine.thresholds
    rules = gate.model_dump(exclude={"deadline_ms"})  # every other gate field is a rule of the same name
    rules["image_threshold"] = t.image if gate.image_threshold is None else gate.image_threshold
    rules["pixel_threshold"] = t.pixel if gate.pixel_threshold is None else gate.pixel_threshold
    return GateRules(**rules)


@dataclass
class LiveState:
    """What the operator page shows."""

    started_ns: int = field(default_factory=time.monotonic_ns)
    first_verdict_ms: float | None = None
    last: dict | None = None
    counts: dict = field(default_factory=lambda: {"PASS": 0, "FAIL": 0})
    frames: int = 0
    running: bool = False
    finished: bool = False


class Station:
    """A running station built from its config."""

    def __init__(self, cfg: StationConfig, *, started_ns: int | None = None) -> None:
        self.cfg = cfg
        self.metrics = StationMetrics()
        self.alarms = Alarms(on_change=self.metrics.alarm)
        self.engine = self._open_engine(cfg.bundle)
        self.rules = gate_rules(cfg.gate, self.engine)
        self.evidence = EvidenceStore(cfg.evidence, self.alarms, cfg.station_id)
        self.metrics.buffer_quota.set(cfg.evidence.quota_mb * 1024 * 1024)
        self.audit = AuditLog(cfg.api.audit_log)
        self.actuator = Actuator(make_backend(cfg.actuator), cfg.actuator, self.alarms, self.metrics)
        self.http_trigger = HttpTrigger() if cfg.source.trigger == "http" else None
        self.source = self._make_source()
        self.history: deque[bool] = deque(maxlen=max(cfg.gate.persistence_m - 1, 1))
        self.state = LiveState(started_ns=started_ns or time.monotonic_ns())
        self.online = False
        self._lock = threading.Lock()  # what the inspection thread reads per frame
        self._control = threading.Lock()  # serialises engineers' changes (gate, bundle)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ setup
    def _open_engine(self, path: str) -> AnomalyEngine:
        engine = AnomalyEngine.load(path)
        if self.cfg.roi:
            engine.roi = Roi.parse(self.cfg.roi)
        engine.warmup()
        return engine

    def _make_source(self) -> FrameSource:
        s = self.cfg.source
        grabber = ReplayGrabber(s.path, s.loop) if s.kind == "replay" else OpenCVGrabber(
            s.device, self.alarms, s.reconnect_initial_s, s.reconnect_max_s)
        if s.trigger == "http":
            trigger = self.http_trigger
        elif s.trigger == "modbus":
            m = self.cfg.actuator.modbus

            def client():
                from pymodbus.client import ModbusTcpClient

                c = ModbusTcpClient(m.host, port=m.port, timeout=m.timeout_s, retries=0)
                if not c.connect():
                    raise ConnectionError(f"{m.host}:{m.port} unreachable")
                return c

            trigger = ModbusTrigger(client, s.trigger_coil, m.device_id, s.trigger_poll_ms, self.alarms)
        else:
            trigger = FreeRunTrigger(s.rate_hz)
        return FrameSource(grabber, trigger, s.queue_size, self.cfg.max_frames)

    # ------------------------------------------------------------------ control
    def start(self) -> "Station":
        """Start capture, inspection and housekeeping threads."""
        self.state.running = True
        self.source.start()
        for target, name in ((self._inspect_loop, "inspect"), (self._housekeeping, "housekeeping")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source ends (replay) or ``stop()``; True if finished."""
        self._threads[0].join(timeout)
        return not self._threads[0].is_alive()

    def stop(self) -> None:
        """Stop capture and inspection; flush the actuator; close the evidence store."""
        self._stop.set()
        self.source.stop()
        for t in self._threads:
            t.join(5)
        self.actuator.close()
        self.evidence.close()
        self.state.running = False

    def reload_bundle(self, path: str, user: str) -> str:
        """Verify and swap in a new bundle; on any failure the running one stays. Returns its version."""
        with self._control:
            try:
                engine = self._open_engine(path)
                rules = gate_rules(self.cfg.gate, engine)
            except LineguardError as exc:
                self.audit.append(user, "bundle_refused", {"path": path, "reason": str(exc)})
                self.alarms.raise_("bundle", f"new bundle refused, still running "
                                             f"{self.engine.bundle.manifest.bundle_version}: {exc}", "warning")
                raise
            version = engine.bundle.manifest.bundle_version
            self.audit.append(user, "bundle_loaded", {"path": path, "bundle_version": version})  # audit first
            with self._lock:
                self.engine, self.rules = engine, rules
        self.alarms.clear("bundle")
        return version

    def update_gate(self, changes: dict, user: str) -> GateRules:
        """Change gate settings (engineer); validated, audited, effective from the next frame."""
        with self._control:
            old = self.cfg.gate.model_dump(mode="json")
            new_cfg = GateConfig.model_validate({**old, **changes})
            rules = gate_rules(new_cfg, self.engine)
            self.audit.append(user, "gate_changed", {"before": {k: old[k] for k in changes}, "after": changes})
            with self._lock:
                self.cfg.gate, self.rules = new_cfg, rules
                # a longer persistence window needs a longer history
                self.history = deque(self.history, maxlen=max(new_cfg.persistence_m - 1, 1))
        return rules

    # ------------------------------------------------------------------ per frame
    def process(self, frame) -> dict:
        """One frame through the whole station; returns its evidence record."""
        t0 = frame.t_trigger_ns
        lat = {"capture": (frame.t_capture_ns - t0) / 1e6}
        with self._lock:
            engine, rules = self.engine, self.rules
        score = area = amap = image = crop = None
        error, detail = frame.error, frame.error_detail
        if error is None:
            try:
                t = time.monotonic_ns()
                image = to_rgb(frame.image, source=frame.name)
                crop = display_crop(image, engine.spec, engine.roi, source=frame.name)  # resized once, reused below
                x = normalize(crop, engine.spec)
                lat["preprocess"] = (time.monotonic_ns() - t) / 1e6
                t = time.monotonic_ns()
                scores, maps, _ = engine.score_batch(x[None])
                lat["inference"] = (time.monotonic_ns() - t) / 1e6
                score, amap = float(scores[0]), maps[0]
                roi = engine.roi
                roi_px = roi.w * roi.h if roi else image.shape[0] * image.shape[1]
                area = anomaly_area(amap, rules.pixel_threshold, roi_px)
                if not np.isfinite(score):
                    raise FloatingPointError("engine returned a non-finite score")
            except (ImageError, RoiError) as exc:
                error, detail, score, image, crop = "wrong_frame", str(exc), None, None, None
            except Exception as exc:  # noqa: BLE001 - any engine fault fails safe, never crashes the loop
                error, detail, score = "engine_error", f"{type(exc).__name__}: {exc}", None
        elapsed_ms = (time.monotonic_ns() - t0) / 1e6
        if error is None and elapsed_ms > self.cfg.gate.deadline_ms:
            error, detail = "deadline_missed", f"{elapsed_ms:.0f} ms > {self.cfg.gate.deadline_ms:g} ms"
        t = time.monotonic_ns()
        with self._lock:
            history = tuple(self.history)
        decision = decide(GateInput(score=score, area_px=area, history=history, error=error,
                                    error_detail=detail), rules)
        with self._lock:
            self.history.append(decision.anomalous)
        lat["gate"] = (time.monotonic_ns() - t) / 1e6
        t = time.monotonic_ns()
        act = self.actuator.submit(frame.seq, decision.verdict, t0)
        now = time.monotonic_ns()
        lat["actuation"] = (now - t) / 1e6
        lat["total"] = (now - t0) / 1e6
        rec = {"seq": frame.seq, "source": frame.name, "wall_time": time.time(), "t_trigger_ns": t0,
               "bundle_version": engine.bundle.manifest.bundle_version, "score": score, "area_px": area,
               "verdict": decision.verdict, "rule": decision.rule, "reasons": list(decision.reasons),
               "latency_ms": lat, "actuation": {"scheduled": act.scheduled, "late": act.late,
                                                 "pulse_at_ns": act.pulse_at_ns, "note": act.note}}
        crop_png = overlay_png = None
        keep = decision.verdict == "FAIL" or self._sample_pass(frame.seq)
        if keep and crop is not None:
            try:
                crop_png = _png(crop)
                if amap is not None:
                    overlay_png = _png(heatmap_overlay(crop, amap, rules.pixel_threshold))
            except Exception:  # noqa: BLE001 - never lose the record over its picture
                log.exception("part %d: evidence images could not be rendered", frame.seq)
                crop_png = overlay_png = None
        rec["id"] = self.evidence.record(rec, crop_png, overlay_png)
        self._account(rec, lat)
        return rec

    def _fail_safe(self, frame, detail: str) -> None:
        decision = decide(GateInput(error="engine_error", error_detail=detail), self.rules)
        try:
            self.actuator.submit(frame.seq, decision.verdict, frame.t_trigger_ns)
        finally:
            self.evidence.record({"seq": frame.seq, "source": frame.name, "t_trigger_ns": frame.t_trigger_ns,
                                  "verdict": decision.verdict, "rule": decision.rule, "reasons": list(decision.reasons)})

    def _sample_pass(self, seq: int) -> bool:
        rate = self.cfg.evidence.pass_sample_rate
        return rate > 0 and (seq % max(1, round(1 / rate))) == 0

    def _account(self, rec: dict, lat: dict) -> None:
        for stage, ms in lat.items():
            self.metrics.observe_stage(stage, ms / 1e3)
        self.metrics.verdicts.labels(rec["verdict"], rec["rule"]).inc()
        if rec["score"] is not None:
            self.metrics.score.set(rec["score"])
        self.metrics.dropped.set(self.source.dropped)
        self.metrics.late_frames.set(self.source.late)
        with self._lock:
            self.state.frames += 1
            self.state.counts[rec["verdict"]] = self.state.counts.get(rec["verdict"], 0) + 1
            self.state.last = rec
            if self.state.first_verdict_ms is None:
                self.state.first_verdict_ms = (time.monotonic_ns() - self.state.started_ns) / 1e6
        act = rec["actuation"]
        pulse = "reject pulse scheduled" if act["scheduled"] else ("LATE: " + act["note"] if act["late"] else "no pulse")
        log.info("part %d %-4s %-22s score=%s area=%s px  %s  (%.1f ms)", rec["seq"], rec["verdict"], rec["rule"],
                 "n/a" if rec["score"] is None else f"{rec['score']:.3f}",
                 "n/a" if rec["area_px"] is None else f"{rec['area_px']:.0f}", pulse, lat["total"])

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

    def _housekeeping(self) -> None:
        next_sync = 0.0
        while not self._stop.wait(1.0):
            try:
                self.evidence.enforce_limits()
                if self.cfg.evidence.sync_url and time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + self.cfg.evidence.sync_interval_s
                    try:
                        self.evidence.sync()
                        self.online = True
                        self.alarms.clear("offline")
                    except (ConnectionError, OSError) as exc:
                        self.online = False
                        self.alarms.raise_("offline", f"{exc}; evidence is kept locally", "warning")
                self.metrics.online.set(1 if self.online else 0)
                self.metrics.buffer_bytes.set(self.evidence.usage_bytes())
                self.metrics.unsynced.set(self.evidence.unsynced())
            except Exception:  # noqa: BLE001
                log.exception("housekeeping failed")


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()
