"""Reject actuation: a timed pulse at trigger + delay, over any :class:`ActuatorBackend`.

One worker thread owns the I/O and a time-ordered heap of typed jobs, so edges go out in
order and on time: it sleeps until just before an edge, spins the last millisecond, and
sends early by half the measured round trip so the edge *arrives* on time. The delay counts
from the part's trigger timestamp (or its encoder count), never from when the decision
came; a decision past its deadline is counted, alarmed and handled by ``late_policy``.
An unreachable PLC raises an alarm and is retried with backoff; inspection goes on.

>>> act = Actuator(NullBackend(), ActuatorConfig(kind="none"), Alarms()).start()  # doctest: +SKIP
>>> act.submit(1, "FAIL", time.monotonic_ns()).scheduled                          # doctest: +SKIP
True
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from serving.alarms import Alarms
from serving.lineio.actuation import make_backend
from serving.lineio.actuation.base import (VERDICT_CODES, ActuatorBackend, EdgeJob, EncoderPulseJob, Job, ResultJob,
                                           StopLineJob)
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.actuation.encoder import EncoderTracker
from serving.lineio.actuation.timeline import Timeline


@dataclass
class ActuationResult:
    """What became of one part's verdict at the actuator."""

    seq: int
    verdict: str
    scheduled: bool
    late: bool = False
    pulse_at_ns: int | None = None
    note: str = ""


class Actuator:
    """Schedules results and reject pulses on one I/O worker thread (started by :meth:`start`)."""

    MAX_EDGE_SLIP_MS = 20.0  # a reject edge later than this is dropped, not fired on the wrong part
    ENCODER_TIMEOUT_S = 10.0

    def __init__(self, backend: ActuatorBackend, cfg: ActuatorConfig, alarms: Alarms, metrics=None) -> None:
        self.backend, self.cfg, self.alarms, self.metrics = backend, cfg, alarms, metrics
        self.timeline: Timeline[Job] = Timeline()
        self.connected = False
        self.rtt_ns = 2_000_000
        self.counts = {"pulses": 0, "late": 0, "errors": 0, "handshake_missed": 0, "results": 0}
        self._awaiting_ack = False
        self._active_pulses = 0
        self._thread = threading.Thread(target=self._run, name="actuator", daemon=True)
        self.encoder = EncoderTracker(lambda: make_backend(cfg), alarms) if cfg.delay_mode == "encoder" else None

    def start(self) -> "Actuator":
        """Start the I/O worker (and the encoder poll in encoder mode)."""
        self._thread.start()
        if self.encoder is not None:
            self.encoder.start()
        return self

    # ------------------------------------------------------------------ API
    def submit(self, seq: int, verdict: str, t_trigger_ns: int) -> ActuationResult:
        """Queue the part's result and, on FAIL, its reject pulse at trigger + delay."""
        now = time.monotonic_ns()
        self._push(now, ResultJob(seq, VERDICT_CODES.get(verdict, 3)))
        if verdict != "FAIL":
            return ActuationResult(seq, verdict, scheduled=False)
        width = int(self.cfg.pulse_ms * 1e6)
        if self.encoder is not None:
            target = self.encoder.at(t_trigger_ns)
            if target is None:
                self._count("errors")
                self.alarms.raise_("encoder", "no encoder reading around the trigger; pulse fired now")
                self._push(now, EncoderPulseJob(seq, None, width, now))
                return ActuationResult(seq, verdict, True, note="encoder unknown")
            self._push(now, EncoderPulseJob(seq, target + self.cfg.delay_counts, width, now))
            return ActuationResult(seq, verdict, True, note=f"at encoder {target + self.cfg.delay_counts}")
        t_on = t_trigger_ns + int(self.cfg.delay_ms * 1e6)
        if now + self.rtt_ns // 2 > t_on:
            return self._late(seq, verdict, now, t_on, width)
        self._push(t_on, EdgeJob(seq, True))
        self._push(t_on + width, EdgeJob(seq, False))
        return ActuationResult(seq, verdict, True, pulse_at_ns=t_on)

    def _late(self, seq: int, verdict: str, now: int, t_on: int, width: int) -> ActuationResult:
        self._count("late")
        late_ms = (now - t_on) / 1e6
        self.alarms.raise_("late_decision", f"part {seq}: decision {late_ms:.1f} ms after its reject time "
                                            f"(policy {self.cfg.late_policy})")
        if self.cfg.late_policy == "stop_line":
            self._push(now, StopLineJob(seq))
        elif self.cfg.late_policy == "reject_now":
            self._push(now, EdgeJob(seq, True))
            self._push(now + width, EdgeJob(seq, False))
        return ActuationResult(seq, verdict, scheduled=self.cfg.late_policy == "reject_now", late=True,
                               note=f"late by {late_ms:.1f} ms")

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until every queued job has run (end of a replay, shutdown)."""
        return self.timeline.wait_empty(timeout)

    def close(self) -> None:
        """Finish queued jobs (briefly), then stop the workers and close the I/O."""
        self.wait_idle(2.0)
        self.timeline.close()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if self.encoder is not None:
            self.encoder.stop()
        self.backend.close()

    # ------------------------------------------------------------------ worker
    def _count(self, key: str) -> None:
        self.counts[key] += 1
        if self.metrics is not None:
            self.metrics.actuation_event(key)

    def _push(self, t_ns: int, job: Job) -> None:
        self.timeline.push(t_ns, job)

    def _ensure_connected(self) -> bool:
        if self.connected:
            return True
        try:
            self.backend.connect()
        except Exception as exc:  # noqa: BLE001 - any transport failure means "not connected"
            self.alarms.raise_("plc", f"actuator {self.backend.kind}: {exc}; retrying with backoff")
            return False
        self.connected = True
        self._active_pulses = 0
        try:
            self.backend.set_reject(False)  # a lost 'off' must not leave the ejector firing
        except Exception:  # noqa: BLE001
            self.connected = False
            return False
        self.alarms.clear("plc")
        return True

    def _run(self) -> None:
        backoff = self.cfg.retry_initial_s
        next_retry = 0.0
        while True:
            item = self.timeline.next_due(lambda job: self.rtt_ns // 2 if isinstance(job, EdgeJob) else 0, idle_s=0.1)
            if item is False:
                return
            if item is None:
                # idle: keep trying a lost PLC so the page shows its real state
                if not self.connected and time.monotonic() >= next_retry:
                    if self._ensure_connected():
                        backoff = self.cfg.retry_initial_s
                    else:
                        next_retry = time.monotonic() + backoff
                        backoff = min(backoff * 2, self.cfg.retry_max_s)
                continue
            t_ns, job = item
            connected = self._ensure_connected()
            # checked after connecting: a reconnect can itself take up to the I/O timeout
            if isinstance(job, EdgeJob) and job.on and (time.monotonic_ns() - t_ns) / 1e6 > self.MAX_EDGE_SLIP_MS:
                self._missed(job.seq, (time.monotonic_ns() - t_ns) / 1e6)
                continue
            if not connected:
                self._retry(job)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_s)
                continue
            backoff = self.cfg.retry_initial_s
            try:
                self._do(job)
            except Exception as exc:  # noqa: BLE001 - a failed write: alarm, reconnect, retry what must not be lost
                self.connected = False
                self.alarms.raise_("plc", f"actuator {self.backend.kind}: {type(job).__name__} for part {job.seq} "
                                          f"failed: {exc}")
                self._retry(job)

    def _retry(self, job: Job) -> None:
        """A job that could not run. Edges and stop-line are retried (an 'on' is re-checked against the
        slip limit when it comes round again); a stale result is not, the next part's result supersedes it."""
        self._count("errors")
        if not isinstance(job, ResultJob):
            self._push(time.monotonic_ns(), job)

    def _missed(self, seq: int, overdue_ms: float) -> None:
        # A pulse this late would hit the wrong part: drop it, count it, say so, apply the late policy.
        self._count("errors")
        self.alarms.raise_("pulse_missed", f"reject pulse for part {seq} missed by {overdue_ms:.0f} ms "
                                           "(PLC link down or station overloaded); check that part by hand")
        if self.cfg.late_policy == "stop_line":
            self._push(time.monotonic_ns(), StopLineJob(seq))

    def _do(self, job: Job) -> None:
        t0 = time.monotonic_ns()
        if isinstance(job, ResultJob):
            if self._awaiting_ack and not self.backend.take_ack():
                self._count("handshake_missed")
                self.alarms.raise_("handshake", f"PLC did not acknowledge the result before part {job.seq}")
            self.backend.write_result(job.seq, job.code)
            self._awaiting_ack = True
            self._count("results")
        elif isinstance(job, EdgeJob) and job.on:
            self._active_pulses += 1
            if self._active_pulses == 1:
                self.backend.set_reject(True)
            self._count("pulses")
        elif isinstance(job, EdgeJob):
            # overlapping pulses (two FAILs closer than the width) merge: off only when the last one ends
            self._active_pulses = max(0, self._active_pulses - 1)
            if self._active_pulses == 0:
                self.backend.set_reject(False)
        elif isinstance(job, StopLineJob):
            self.backend.set_stop_line(True)
        elif isinstance(job, EncoderPulseJob):
            self._encoder_step(job)
            return
        if isinstance(job, EdgeJob):
            self.rtt_ns = int(0.8 * self.rtt_ns + 0.2 * (time.monotonic_ns() - t0))

    def _encoder_step(self, job: EncoderPulseJob) -> None:
        """Fire when the encoder reaches the target; otherwise look again in 0.5 ms (never block the worker)."""
        now = time.monotonic_ns()
        latest = self.encoder.latest() if self.encoder is not None else None
        if job.target is None or (latest is not None and latest >= job.target):
            self._push(now, EdgeJob(job.seq, True))
            self._push(now + job.width_ns, EdgeJob(job.seq, False))
        elif now - job.since_ns > int(self.ENCODER_TIMEOUT_S * 1e9):
            self._count("late")
            self.alarms.raise_("encoder", f"part {job.seq}: encoder did not reach {job.target} within "
                                          f"{self.ENCODER_TIMEOUT_S:g} s (line stopped or encoder lost)")
            if self.cfg.late_policy == "stop_line":
                self._push(now, StopLineJob(job.seq))
        else:
            self._push(now + 500_000, job)
