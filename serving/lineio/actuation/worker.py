"""The actuator's I/O thread: typed jobs at their time, and the link's periodic duties between them.

Between jobs it writes the heartbeat and the station-state register, polls the ack coil while a
result waits (clearing result-ready as soon as the PLC acknowledges), reads back a latched
stop-line output, and reconnects a lost PLC with backoff. Jobs keep their time order: an edge is
never delayed by more than one register write.

>>> w = IoWorker(NullBackend(), ActuatorConfig(), Alarms(), counts, pulses, lambda: 1).start()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from serving.alarms import Alarms
from serving.lineio.actuation.base import ActuatorBackend, EdgeJob, EncoderPulseJob, Job, ResultJob, StopLineJob
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.actuation.counters import PlcCounters
from serving.lineio.actuation.modbus_map import STATE_STOPPED
from serving.lineio.actuation.pulses import PulseMonitor
from serving.lineio.actuation.timeline import Timeline

log = logging.getLogger("lineguard.actuation")
ENCODER_TIMEOUT_S = 10.0


class IoWorker:
    """Owns the backend: only this thread talks to the device until :meth:`close`."""

    def __init__(self, backend: ActuatorBackend, cfg: ActuatorConfig, alarms: Alarms, count: Callable[[str], None],
                 pulses: PulseMonitor, state: Callable[[], int], counters: PlcCounters | None = None,
                 on_missed: Callable[[int, float, str], None] | None = None) -> None:
        self.backend, self.cfg, self.alarms, self.count = backend, cfg, alarms, count
        self.pulses, self.state, self.counters, self.on_missed = pulses, state, counters, on_missed
        self.timeline: Timeline[Job] = Timeline()
        self.connected = False
        self.rtt_ns = 2_000_000
        self.heartbeat = 0
        self.stop_line_latched = False
        self.ack_latency_ms: float | None = None
        self._active = 0  # pulses holding the output on (overlapping pulses merge)
        self._awaiting: tuple[int, int] | None = None  # (seq, written at ns) of the unacknowledged result
        self.newest_result = -1  # a queued result older than this is superseded, never written late
        self._due = {"heartbeat": 0, "ack": 0, "stop_line": 0, "reconnect": 0}
        self._backoff = cfg.retry_initial_s
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
            item = self.timeline.next_due(self._lead, until_ns=min(self._due.values()))
            if item is False:
                return
            if item is None:
                self._duties()
                continue
            try:
                self._execute(*item)
            except Exception:  # noqa: BLE001 - the worker must outlive any one job
                log.exception("actuator job %s failed unexpectedly", item[1])

    def _ensure_connected(self) -> bool:
        if self.connected:
            return True
        try:
            self.backend.connect()
            self.backend.set_reject(False)  # a lost 'off' must not leave the ejector firing
        except Exception as exc:  # noqa: BLE001 - any transport failure means "not connected"
            self.alarms.raise_("plc", f"actuator {self.backend.kind}: {exc}; retrying with backoff")
            self._due["reconnect"] = time.monotonic_ns() + int(self._backoff * 1e9)
            self._backoff = min(self._backoff * 2, self.cfg.retry_max_s)
            return False
        self.connected, self._active, self._backoff = True, 0, self.cfg.retry_initial_s
        self.alarms.clear("plc")
        return True

    def _lost(self, what: str, exc: Exception) -> None:
        self.connected = False
        self.count("errors")
        self.alarms.raise_("plc", f"actuator {self.backend.kind}: {what} failed: {exc}; reconnecting")
        self._due["reconnect"] = time.monotonic_ns()

    def _execute(self, t_ns: int, job: Job) -> None:
        if isinstance(job, EdgeJob) and job.on and time.monotonic_ns() > job.deadline_ns:
            return self._missed(job, "the station fell behind" if self.connected else "PLC link down")
        if isinstance(job, ResultJob) and job.seq != self.newest_result:
            self.count("errors")  # a newer part's result replaces it; a FAIL request that never got out is a miss
            if job.reject_cmd is not None and self.on_missed is not None:
                self.on_missed(job.seq, 0.0, "its reject request never reached the PLC")
            return None
        if not self._ensure_connected():
            if isinstance(job, EdgeJob) and job.on:
                return self.push(min(job.deadline_ns + 1, time.monotonic_ns() + 5_000_000), job)  # try until its deadline
            if isinstance(job, (StopLineJob, ResultJob)) or (isinstance(job, EdgeJob) and not job.on):
                return self.push(time.monotonic_ns() + int(self._backoff * 1e9), job)
            return None
        try:
            self._do(job)
        except Exception as exc:  # noqa: BLE001 - a failed write: alarm, reconnect, retry what must not be lost
            self._lost(type(job).__name__ + f" for part {job.seq}", exc)
            self.push(time.monotonic_ns(), job)

    def _missed(self, job: EdgeJob, why: str) -> None:
        if self.on_missed is not None:
            self.on_missed(job.seq, (time.monotonic_ns() - job.intended_ns) / 1e6, why)

    def _do(self, job: Job) -> None:
        if isinstance(job, ResultJob):
            if self._awaiting is not None:
                self.count("handshake_missed")
                self.alarms.raise_("handshake", f"PLC did not acknowledge part {self._awaiting[0]} before part "
                                                f"{job.seq}'s result; check the PLC program's ack")
            self.backend.write_result(job.seq, job.code, job.reject_cmd)
            self._awaiting = (job.seq, time.monotonic_ns()) if "ack" in self.backend.signals else None
            self._due["ack"] = time.monotonic_ns()
            self.count("results")
        elif isinstance(job, EdgeJob):
            self._edge(job)
        elif isinstance(job, StopLineJob):
            self.backend.set_stop_line(job.on)
            self.stop_line_latched = job.on
            if job.on:
                self.alarms.raise_("stop_line", f"line stop requested ({job.reason}); reset it at the PLC or on the page")
            else:
                self.alarms.clear("stop_line")
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
                if job.guard is not None:
                    self.backend.write_reject_cmd(job.seq, job.guard)
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

    # ------------------------------------------------------------------ duties between jobs
    def _duties(self) -> None:
        now = time.monotonic_ns()
        if not self.connected:
            if now >= self._due["reconnect"]:
                self._ensure_connected()
            self._due["heartbeat"] = max(self._due["heartbeat"], now + 20_000_000)
            self._due["ack"] = self._due["stop_line"] = self._due["heartbeat"]
            return
        try:
            if now >= self._due["heartbeat"]:
                self._due["heartbeat"] = now + int(self.cfg.modbus.heartbeat_ms * 1e6)
                self.heartbeat = (self.heartbeat + 1) & 0xFFFF
                self.backend.write_status(self.heartbeat, self.state())
                problem = self.backend.link_error()
                self.alarms.raise_("plc", problem) if problem else self.alarms.clear("plc")
            if now >= self._due["ack"]:
                self._poll_ack(now)
            if now >= self._due["stop_line"]:
                self._due["stop_line"] = now + 250_000_000
                if self.stop_line_latched and self.backend.read_stop_line() is False:
                    self.stop_line_latched = False
                    self.alarms.clear("stop_line")
                    log.warning("stop-line output was reset at the PLC")
        except Exception as exc:  # noqa: BLE001 - a failed duty means the link is down
            self._lost("heartbeat/ack", exc)

    def _poll_ack(self, now: int) -> None:
        if self._awaiting is None:
            self._due["ack"] = now + 1_000_000_000
            return
        seq, since = self._awaiting
        self._due["ack"] = now + int(self.cfg.modbus.ack_poll_ms * 1e6)
        if self.backend.read_ack():
            self.backend.clear_handshake()
            self.ack_latency_ms = (time.monotonic_ns() - since) / 1e6
            self._awaiting = None
            self.count("acks")
            self.alarms.clear("handshake")
        elif (now - since) / 1e6 > self.cfg.modbus.ack_timeout_ms:
            self.alarms.raise_("handshake", f"PLC has not acknowledged part {seq}'s result for "
                                            f"{(now - since) / 1e6:.0f} ms (limit {self.cfg.modbus.ack_timeout_ms:g} ms)")

    # ------------------------------------------------------------------ stop
    def close(self) -> list[int]:
        """Stop the thread, then drive the outputs to their safe state; return the parts whose pulses never ran."""
        pending = sorted({job.seq for job in self.timeline.drain()
                          if isinstance(job, (EdgeJob, EncoderPulseJob)) and getattr(job, "on", True)})
        self.timeline.close()
        if self._thread.is_alive():
            self._thread.join(3.0)
        try:
            if self._ensure_connected():
                self.backend.set_reject(False)
                self.backend.write_status((self.heartbeat + 1) & 0xFFFF, STATE_STOPPED)
                if self.cfg.stop_line_on_exit:
                    self.backend.set_stop_line(True)
        except Exception as exc:  # noqa: BLE001 - nothing more can be done from here; the PLC's watchdog acts
            log.error("could not drive the outputs to their safe state: %s", exc)
        finally:
            self.backend.close()
        return pending
