"""The station runtime: frame -> engine -> gate -> actuator, with evidence and metrics.

The orchestrator over rooms that do not know each other (engine, gate, line I/O, evidence).
One inspection thread takes frames from the capture queue and, per frame, inspects it
(:func:`serving.station.inspect.inspect`), hands the verdict to the actuator (which times the
pulse from the frame's trigger timestamp), then hands the part to the after-part thread, which renders and
stores its evidence while the next part is inspected (:mod:`serving.station.after_part`). No single bad frame,
engine fault or PLC outage stops the loop: each becomes a fail-safe verdict or an alarm.

>>> station = Station(load_config("station.example.yaml"))   # doctest: +SKIP
>>> station.start(); station.wait()                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field


from serving.alarms import Alarms
from serving.config import StationConfig
from serving.evidence.record import InspectionRecord
from serving.evidence.store import EvidenceStore
from serving.drift.capture import Capture
from serving.gate import History
from serving.lineio.actuation import make_backend
from serving.lineio.actuation.scheduler import Actuator
from serving.lineio.frames import Frame
from serving.station.after_part import AfterPart
from serving.station.audit import AuditLog
from serving.station.gate_changes import GateControl, GateOverrides
from serving.station.bundle_control import BundleControl
from serving.station.bundle_store import BundleStore
from serving.station.housekeeping import Housekeeper
from serving.station.inspect import inspect
from serving.station.records import PartView, PulseRecorder, log_part, record_of
from serving.station.metrics import StationMetrics
from serving.station.normals import Normals
from serving.station.sources import make_source
from serving.station.status import LineStatus

log = logging.getLogger("lineguard.station")


@dataclass
class LiveState:
    """What the operator page shows."""

    started_ns: int = field(default_factory=time.monotonic_ns)
    first_verdict_ms: float | None = None
    last: InspectionRecord | None = None
    last_view: PartView | None = None
    counts: dict = field(default_factory=lambda: {"PASS": 0, "FAIL": 0})
    frames: int = 0
    running: bool = False
    finished: bool = False

    def account(self, rec: InspectionRecord, view: PartView | None = None) -> None:
        """Count one part and keep it (and its pictures) as the last one (callers hold the station's lock)."""
        self.frames += 1
        self.counts[rec.verdict] = self.counts.get(rec.verdict, 0) + 1
        self.last, self.last_view = rec, view
        if self.first_verdict_ms is None:
            self.first_verdict_ms = (time.monotonic_ns() - self.started_ns) / 1e6


class Station(BundleControl, GateControl, LineStatus):
    """A running station built from its config; threads start in :meth:`start`."""

    def __init__(self, cfg: StationConfig, *, started_ns: int | None = None) -> None:
        self.cfg = cfg
        self.boot_id = uuid.uuid4().hex[:12]
        self.metrics = StationMetrics()
        self.alarms = Alarms(on_change=self.metrics.alarm)
        self.trust = cfg.bundles.trust()
        self.store = BundleStore(cfg.bundles.store, cfg.bundles.keep_versions)
        self._open_bundles()
        self.rules = self._rules(cfg.gate, self.engine, self.detector)
        self.evidence = EvidenceStore(cfg.evidence, self.alarms, cfg.station_id)
        self.metrics.buffer_quota.set(cfg.evidence.quota_mb * 1024 * 1024)
        self.audit = AuditLog(cfg.api.audit_log, cfg.api.beside_log(cfg.api.audit_key, "audit.key"),
                              cfg.api.beside_log(cfg.api.audit_head, "audit.head"))  # verified: refuses a tampered log
        self.gate_overrides = GateOverrides(cfg.api.beside_log(cfg.api.gate_overrides, "gate-overrides.json"), self.audit)
        self._config_gate = cfg.gate  # the config file's own gate: saved changes are made over it
        saved = self.gate_overrides.apply_at_start(cfg, self.alarms)  # gate changes made through the API last time
        if saved is not None:
            cfg.gate, self.rules = saved, self._rules(saved, self.engine, self.detector)
        self.pulse_records = PulseRecorder(self.evidence, self.boot_id)
        self.actuator = Actuator(make_backend(cfg.actuator), cfg.actuator, self.alarms, self.metrics,
                                 state=self.plc_state, on_pulse=self.pulse_records.report)
        first_seq = self.evidence.next_seq()  # above every number this buffer issued: one number, one part
        self.source, self.http_trigger = make_source(cfg, self.alarms, self.actuator, first_seq, self._on_unseen)
        self.history = History(cfg.gate.persistence_m)
        self.normals = Normals(cfg.stability, self.alarms, self.audit)
        self.stability = self.normals.stability
        self.normals.watch(self.engine.bundle.manifest)
        self.state = LiveState(started_ns=started_ns or time.monotonic_ns())
        self.after = AfterPart(self.alarms)
        self.housekeeper = Housekeeper(self.evidence, cfg.evidence, self.alarms, self.metrics, self.pulse_records.flush)
        self._lock = threading.Lock()  # what the inspection thread reads per frame
        self._control = threading.Lock()  # serialises engineers' changes (gate, bundle)
        self._stop = threading.Event()
        self._inspector = threading.Thread(target=self._inspect_loop, name="inspect", daemon=True)

    @property
    def capture(self) -> Capture | None:
        """The current or last recalibration capture."""
        return self.normals.capture

    def classes(self) -> list[str]:
        """The operator's quick tags: the station's classes and any its detector adds."""
        extra = [c for c in (self.detector.classes if self.detector else []) if c not in self.cfg.classes]
        return [*self.cfg.classes, *extra]

    # ------------------------------------------------------------------ control
    def start(self) -> "Station":
        """Start the actuator, capture, inspection and housekeeping threads."""
        self.state.running = True
        self.actuator.start()
        self.source.start()
        self.after.start()
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
        pending = self.actuator.close()  # the outputs safe first, even if the evidence disk hangs
        self.after.close()  # the last parts' evidence, before the pulse outcomes are flushed and the store closes
        self.housekeeper.stop()
        if pending:
            self.audit.append("station", "pulses_not_fired", {"reason": reason, "parts": pending})
        self.evidence.close()
        return pending

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame) -> InspectionRecord:
        """One frame through the whole station; returns its record, which the after-part thread stores (at once,
        on this thread, when the station is not running)."""
        t0 = frame.t_trigger_ns
        with self._lock:
            engine, detector, rules, history = self.engine, self.detector, self.rules, self.history.window()
        insp = inspect(engine, rules, frame.image, history=history, source=frame.name, error=frame.error,
                       detail=frame.error_detail, t_trigger_ns=t0, detector=detector)
        with self._lock:
            self.history.push(insp.decision)
        t = time.monotonic_ns()
        fail_safe = insp.decision.rule.startswith("fail_safe")
        act = self.actuator.submit(frame.seq, insp.decision.verdict, t0, fail_safe=fail_safe)
        now = time.monotonic_ns()
        lat = {"capture": (frame.t_capture_ns - t0) / 1e6, **insp.latency_ms, "actuation": (now - t) / 1e6,
               "total": (now - t0) / 1e6}
        # after the actuator has its command: drift bookkeeping never delays a reject
        report = self.stability.add(None if fail_safe else insp.score, insp.result.embedding if insp.result else None,
                                    insp.figures)
        rec = record_of(frame, insp, act, self.cfg.station_id, self.boot_id, engine.bundle.manifest.bundle_version, lat)
        rec.stability_index = report.index if self.stability.baseline is not None else None
        rec.capture_id = self.normals.take() if not fail_safe else None
        view = PartView.of(frame.image, insp, engine.roi, rules.pixel_threshold, self.cfg.evidence.image_max_px)
        keep = insp.decision.verdict == "FAIL" or rec.capture_id is not None or self._sample_pass(frame.seq)
        explain = view is not None and insp.decision.verdict == "FAIL" and not fail_safe  # the model's FAILs: why
        self.after.submit(lambda: self._keep(rec, view, keep, engine, insp.result if explain else None, report))
        return rec

    def _keep(self, rec: InspectionRecord, view: PartView | None, keep: bool, engine, explain_result,
              report) -> None:
        """A part's evidence (images if ``keep``, explanation, encrypted record), counters and live page: on the
        after-part thread, once the actuator has the verdict."""
        images = view.pngs() if keep and view is not None else (None, None)
        explain_jpg = None
        if explain_result is not None:
            t = time.monotonic_ns()
            rec.explain, explain_jpg = view.explain(engine, explain_result)
            rec.latency_ms["explain"] = (time.monotonic_ns() - t) / 1e6
        rec.id = self.evidence.record(rec, *images, explain_jpg)
        self.metrics.part(rec, report, self.source)
        with self._lock:
            self.state.account(rec, view)
        log_part(rec)

    def _fail_safe(self, frame: Frame, detail: str) -> None:
        insp = inspect(self.engine, self.rules, None, error="engine_error", detail=detail)
        act = self.actuator.submit(frame.seq, insp.decision.verdict, frame.t_trigger_ns, fail_safe=True)
        rec = record_of(frame, insp, act, self.cfg.station_id, self.boot_id, "", {})
        self.after.submit(lambda: self.evidence.record(rec))  # behind the parts before it: records stay in order

    def _sample_pass(self, seq: int) -> bool:
        rate = self.cfg.evidence.pass_sample_rate
        return rate > 0 and (seq % max(1, round(1 / rate))) == 0

    def _inspect_loop(self) -> None:
        while not self._stop.is_set():
            frame = self.source.get()
            if frame is None:
                break
            try:
                self.process(frame)
            except Exception as exc:  # noqa: BLE001 - last line of defence: reject the part, record it, go on
                log.exception("part %s: inspection failed unexpectedly", frame.seq)
                self.alarms.event("inspection", f"part {frame.seq}: unexpected failure, rejected; see the log")
                self._fail_safe(frame, f"{type(exc).__name__}: {exc}")
        if not self.after.flush():
            log.error("the last parts' evidence was not written within 60 s")
        self.actuator.wait_idle(5.0)
        self.state.finished = True
