"""The actuator's I/O thread: typed jobs at their time, and the link's periodic duties between them.

Jobs keep their time order; between them the :class:`~serving.lineio.actuation.link.Link` does its
duties (heartbeat, handshake, stop-line read-back, reconnects), so an edge is never delayed by more
than one register write. An 'on' edge past its deadline is never written: it would hit another part.

>>> w = IoWorker(NullBackend(), ActuatorConfig(), Alarms(), counts, pulses, lambda: 1).start()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from serving.alarms import Alarms
from serving.lineio.actuation.base import (ActuatorBackend, EdgeJob, EncoderPulseJob, GuardJob, Job, ResultJob,
                                           StopLineJob)
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.actuation.counters import PlcCounters
from serving.lineio.actuation.link import Link
from serving.lineio.actuation.modbus_map import STATE_STOPPED
from serving.lineio.actuation.pulses import PulseMonitor
from serving.lineio.actuation.timeline import Timeline

log = logging.getLogger("lineguard.actuation")
ENCODER_TIMEOUT_S = 10.0
DUTY_CLEARANCE_NS = 5_000_000  # no heartbeat or ack poll this close before a job: it could delay an edge


class IoWorker:
    """Owns the backend: only this thread talks to the device until :meth:`close`."""

    def __init__(self, backend: ActuatorBackend, cfg: ActuatorConfig, alarms: Alarms, count: Callable[[str], None],
                 pulses: PulseMonitor, state: Callable[[], int], counters: PlcCounters | None = None,
                 on_missed: Callable[[int, float, str], None] | None = None) -> None:
        self.backend, self.cfg, self.alarms, self.count = backend, cfg, alarms, count
        self.pulses, self.state, self.counters, self.on_missed = pulses, state, counters, on_missed
        self.timeline: Timeline[Job] = Timeline()
        self.link = Link(backend, cfg, alarms, count, state)
        self.rtt_ns = 2_000_000
        self.newest_result = -1  # a queued result older than this is superseded, never written late
        self._active = 0  # pulses holding the output on (overlapping pulses merge)
        self._thread = threading.Thread(target=self._run, name="actuator", daemon=True)

    def start(self) -> "IoWorker":
        """Start the thread."""
        self._thread.start()
        return self

    def push(self, t_ns: int, job: Job) -> None:
        """Queue ``job`` for ``t_ns``."""
        self.timeline.push(t_ns, job)

    # ------------------------------------------------------------------ loop
    def _lead(self, job: Job) -> int:
        return self.rtt_ns // 2 if isinstance(job, EdgeJob) else 0

    def _run(self) -> None:
        while True:
            upcoming = self.timeline.peek_ns()
            duties = self.link.next_due_ns()
            if upcoming is not None and upcoming - DUTY_CLEARANCE_NS < duties:
                duties = max(duties, upcoming + 1)  # a job is about to be due: it goes first, duties can wait
            item = self.timeline.next_due(self._lead, until_ns=duties)
            if item is False:
                return
            if item is None:
                self.link.duties()
                continue
            try:
                self._execute(*item)
            except Exception:  # noqa: BLE001 - the worker must outlive any one job
                log.exception("actuator job %s failed unexpectedly", item[1])

    def _execute(self, t_ns: int, job: Job) -> None:
        if isinstance(job, EdgeJob) and job.on and time.monotonic_ns() > job.deadline_ns:
            return self._missed(job, "the station fell behind" if self.link.connected else "PLC link down")
        if isinstance(job, ResultJob) and job.seq != self.newest_result:
            self.count("errors")  # a newer part's result replaces it; a FAIL request that never got out is a miss
            if job.reject_cmd is not None and self.on_missed is not None:
                self.on_missed(job.seq, 0.0, "its reject request never reached the PLC")
            return None
        if not self.link.ensure_connected():
            if isinstance(job, EdgeJob) and job.on:
                return self.push(min(job.deadline_ns + 1, time.monotonic_ns() + 5_000_000), job)  # try until its deadline
            if isinstance(job, (StopLineJob, ResultJob)) or (isinstance(job, EdgeJob) and not job.on):
                return self.push(time.monotonic_ns() + int(self.link.backoff_s * 1e9), job)
            return None
        try:
            self._do(job)
        except Exception as exc:  # noqa: BLE001 - a failed write: alarm, reconnect, retry what must not be lost
            self.link.lost(type(job).__name__ + f" for part {job.seq}", exc)
            self.push(time.monotonic_ns(), job)

    def _missed(self, job: EdgeJob, why: str) -> None:
        if self.on_missed is not None:
            self.on_missed(job.seq, (time.monotonic_ns() - job.intended_ns) / 1e6, why)

    def _do(self, job: Job) -> None:
        if isinstance(job, ResultJob):
            self.backend.write_result(job.seq, job.code, job.reject_cmd)
            self.link.result_written(job.seq)
            self.count("results")
        elif isinstance(job, EdgeJob):
            self._edge(job)
        elif isinstance(job, GuardJob):
            self.backend.write_reject_cmd(job.seq, job.deadline_clock)
        elif isinstance(job, StopLineJob):
            self.link.stop_line(job.on, job.reason)
        elif isinstance(job, EncoderPulseJob):
            self._encoder_step(job)

    def _write_edge(self, on: bool) -> int:
        """Write the reject coil; return when it most likely reached the PLC.

        That is the reply's arrival minus half the usual round trip: a slow request was most likely slow on
        the way there, so the estimate errs towards "late", the side that is alarmed."""
        t0 = time.monotonic_ns()
        self.backend.set_reject(on)
        t1 = time.monotonic_ns()
        arrived = max(t0, t1 - self.rtt_ns // 2)
        self.rtt_ns = int(0.8 * self.rtt_ns + 0.2 * min(t1 - t0, 3 * self.rtt_ns))  # one stall must not skew the lead
        return arrived

    def _edge(self, job: EdgeJob) -> None:
        if job.on:
            self.count("pulses")
            if self._active == 0:
                self.pulses.started(job.seq, job.intended_ns, self._write_edge(True))
            else:
                self.pulses.started(job.seq, job.intended_ns, None)
            self._active += 1
            return
        self._active = max(0, self._active - 1)
        if self._active == 0:  # overlapping pulses merge: off only when the last one ends
            self.pulses.ended(self._write_edge(False))

    def _encoder_step(self, job: EncoderPulseJob) -> None:
        """Fire when the encoder reaches the target; otherwise look again in 0.5 ms (never block the worker)."""
        now = time.monotonic_ns()
        latest = self.counters.encoder.latest() if self.counters is not None else None
        if job.target is None or (latest is not None and latest >= job.target):
            self.push(now, EdgeJob(job.seq, True, now, now + int(self.cfg.max_edge_slip_ms * 1e6)))
            self.push(now + job.width_ns, EdgeJob(job.seq, False, now + job.width_ns, now + 10**12))
        elif now - job.since_ns > int(ENCODER_TIMEOUT_S * 1e9):
            if self.on_missed is not None:
                self.on_missed(job.seq, ENCODER_TIMEOUT_S * 1e3, f"encoder never reached {job.target} "
                                                                 "(line stopped or encoder lost)")
        else:
            self.push(now + 500_000, job)

    # ------------------------------------------------------------------ stop
    def close(self) -> list[int]:
        """Stop the thread, then drive the outputs to their safe state; return the parts whose pulses never ran."""
        pending = sorted({job.seq for job in self.timeline.drain()
                          if isinstance(job, (EdgeJob, EncoderPulseJob)) and getattr(job, "on", True)})
        self.timeline.close()
        if self._thread.is_alive():
            self._thread.join(3.0)
        try:
            if self.link.ensure_connected():
                self.backend.set_reject(False)
                self.backend.write_status((self.link.heartbeat + 1) & 0xFFFF, STATE_STOPPED)
                if self.cfg.stop_line_on_exit:
                    self.backend.set_stop_line(True)
        except Exception as exc:  # noqa: BLE001 - nothing more can be done from here; the PLC's watchdog acts
            log.error("could not drive the outputs to their safe state: %s", exc)
        finally:
            self.backend.close()
        return pending
