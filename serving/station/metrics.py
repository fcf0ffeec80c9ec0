"""Prometheus metrics for one station (its own registry, served at ``/metrics``).

>>> m = StationMetrics()
>>> m.observe_stage("inference", 0.012)
>>> b"lineguard_stage_latency_seconds" in m.render()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.evidence.record import InspectionRecord

STAGES = ("capture", "preprocess", "inference", "gate", "actuation", "total")
PULSE_BUCKETS = (-0.02, -0.005, -0.002, -0.001, 0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


class StationMetrics:
    """All the station's series."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.stage = Histogram("lineguard_stage_latency_seconds", "Latency per pipeline stage (total = trigger to "
                               "actuation command)", ["stage"], buckets=BUCKETS, registry=r)
        self.verdicts = Counter("lineguard_verdicts_total", "Verdicts by outcome and deciding rule", ["verdict", "rule"], registry=r)
        self.dropped = Gauge("lineguard_frames_dropped", "Frames dropped because inspection fell behind", registry=r)
        self.late_frames = Gauge("lineguard_frames_late", "Captures that started late", registry=r)
        self.actuation = Counter("lineguard_actuation_events_total", "Actuator events: results, acks, pulses, late "
                                 "(decisions past their reject time), missed, pulse_late, pulse_short, errors, "
                                 "handshake_missed", ["event"], registry=r)
        self.buffer_bytes = Gauge("lineguard_evidence_bytes", "Evidence buffer usage", registry=r)
        self.buffer_quota = Gauge("lineguard_evidence_quota_bytes", "Evidence buffer quota", registry=r)
        self.unsynced = Gauge("lineguard_evidence_unsynced_records", "Evidence records not yet synced", registry=r)
        self.write_failures = Gauge("lineguard_evidence_write_failures", "Evidence records the database refused "
                                    "(each queued and retried)", registry=r)
        self.pending = Gauge("lineguard_evidence_pending_records", "Evidence records queued for the database", registry=r)
        self.lost = Gauge("lineguard_evidence_lost_records", "Evidence records lost because the queue was full", registry=r)
        self.pulse_start = Histogram("lineguard_pulse_start_error_seconds", "Reject pulse start, as sent, minus "
                                     "when it should have started", buckets=PULSE_BUCKETS, registry=r)
        self.pulse_width = Histogram("lineguard_pulse_width_error_seconds", "Reject pulse width minus the "
                                     "configured width", buckets=PULSE_BUCKETS, registry=r)
        self.stability_index = Gauge("lineguard_stability_index", "Stability Index, 100 = as at enrollment", registry=r)
        self.stability_component = Gauge("lineguard_stability_component", "Stability Index components (0-100)",
                                         ["component"], registry=r)
        self.classes = Counter("lineguard_class_verdicts", "Verdicts by defect class (detector)", ["verdict", "class"],
                               registry=r)
        self.alarms = Gauge("lineguard_alarm_active", "1 while an alarm is raised", ["name"], registry=r)
        self.online = Gauge("lineguard_sync_online", "1 when the evidence sync target is reachable", registry=r)
        self.score = Gauge("lineguard_last_score", "Anomaly score of the last frame", registry=r)

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record one stage latency."""
        self.stage.labels(stage).observe(seconds)

    def part(self, rec: InspectionRecord, report, source) -> None:
        """Account one inspected part: stage latencies, verdict and rule, score; the Stability Index and its
        components after it; the frame source's dropped and late counts."""
        for stage, ms in rec.latency_ms.items():
            self.observe_stage(stage, ms / 1e3)
        self.verdicts.labels(rec.verdict, rec.rule).inc()
        if rec.class_name:
            self.classes.labels(rec.verdict, rec.class_name).inc()
        if rec.score is not None:
            self.score.set(rec.score)
        self.stability_index.set(report.index)
        for name, c in report.components.items():
            self.stability_component.labels(name).set(c.score)
        self.dropped.set(source.dropped)
        self.late_frames.set(source.late)

    def actuation_event(self, event: str) -> None:
        """Count an actuator event."""
        self.actuation.labels(event).inc()

    def observe_pulse(self, start_error_s: float, width_error_s: float) -> None:
        """One finished reject pulse's start and width errors."""
        self.pulse_start.observe(start_error_s)
        self.pulse_width.observe(width_error_s)

    def alarm(self, name: str, active: bool) -> None:
        """Mirror an alarm's state."""
        self.alarms.labels(name).set(1 if active else 0)

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)
