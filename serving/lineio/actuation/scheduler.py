"""Reject actuation policy: what each verdict asks of the PLC, and when.

A FAIL's reject pulse counts from the part's trigger (or its encoder count), never from when the
decision came. With ``pulse_owner: station`` the station times the reject coil itself (and, where
the PLC has a clock register, writes a deadline beside it so a command delivered late after a PLC
freeze is not acted on); with ``pulse_owner: plc`` it writes the part's reject request -- sequence
number and encoder or PLC-clock target -- and the PLC fires. A decision past its reject time is
counted, alarmed and handled by ``late_policy``; ``reject_now`` has a cap beyond which it stops
the line instead, because a pulse that late would hit another part.

>>> act = Actuator(NullBackend(), ActuatorConfig(kind="none"), Alarms()).start()  # doctest: +SKIP
>>> act.submit(1, "FAIL", time.monotonic_ns()).scheduled                          # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.alarms import Alarms
from serving.lineio.actuation import make_backend
from serving.lineio.actuation.base import (VERDICT_CODES, ActuatorBackend, EdgeJob, EncoderPulseJob, GuardJob,
                                           ResultJob, StopLineJob)
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.actuation.counters import PlcCounters
from serving.lineio.actuation.modbus_map import STATE_RUNNING
from serving.lineio.actuation.pulses import PulseMonitor, PulseReport
from serving.lineio.actuation.worker import IoWorker

log = logging.getLogger("lineguard.actuation")
GUARD_LEAD_NS = 10_000_000  # the reject command goes this long before its pulse
FIRST_CONNECT_WAIT_S = 2.0  #: start() waits at most this long for the first connection attempt to end
COUNTS = ("results", "acks", "pulses", "late", "missed", "pulse_late", "pulse_short", "errors", "handshake_missed")


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
    """Turns verdicts into timed jobs for the I/O worker; threads start in :meth:`start`."""

    def __init__(self, backend: ActuatorBackend, cfg: ActuatorConfig, alarms: Alarms, metrics=None,
                 state: Callable[[], int] = lambda: STATE_RUNNING,
                 on_pulse: Callable[[PulseReport], None] | None = None) -> None:
        self.backend, self.cfg, self.alarms, self.metrics = backend, cfg, alarms, metrics
        self.counts = dict.fromkeys(COUNTS, 0)
        self.pulses = PulseMonitor(cfg.start_tolerance_ms, cfg.min_width_ms, cfg.pulse_ms, alarms, self._count,
                                   on_pulse, metrics.observe_pulse if metrics is not None else None)
        m = cfg.modbus
        wants = cfg.kind == "modbus" and (cfg.delay_mode == "encoder" or cfg.pulse_owner == "plc" or
                                          m.hr_plc_clock is not None)
        self.counters = PlcCounters(lambda: make_backend(cfg), alarms, m.counter_poll_ms) if wants else None
        self.worker = IoWorker(backend, cfg, alarms, self._count, self.pulses, state, self.counters, self._missed)

    def start(self) -> "Actuator":
        """Start the I/O worker (and the PLC counter poll where one is needed); return once the first connection
        attempt has ended (connected, or alarmed), so the first part's result does not wait on it."""
        self.worker.start()
        # a result still queued behind the connect when the next part comes is superseded (never written late):
        # without this wait the first part's result could be lost on a slow first connect
        self.link.tried.wait(FIRST_CONNECT_WAIT_S)
        if self.counters is not None:
            self.counters.start()
            self.counters.wait_first(1.0)  # the first part's target needs a reading; a dead PLC is alarmed anyway
        return self

    @property
    def link(self):
        """The PLC link's state: heartbeat, handshake, stop-line."""
        return self.worker.link

    @property
    def connected(self) -> bool:
        """True while the PLC link is up and the PLC listens."""
        return self.link.connected and not self.alarms.is_active("plc")

    def _count(self, key: str) -> None:
        self.counts[key] += 1
        if self.metrics is not None:
            self.metrics.actuation_event(key)

    # ------------------------------------------------------------------ verdicts
    def submit(self, seq: int, verdict: str, t_trigger_ns: int, *, fail_safe: bool = False) -> ActuationResult:
        """Publish the part's result and, on FAIL, arrange its reject at trigger + delay."""
        now = time.monotonic_ns()
        code = VERDICT_CODES["FAIL_SAFE" if fail_safe and verdict == "FAIL" else verdict]
        if verdict != "FAIL":
            return self._result(seq, code, now, None, ActuationResult(seq, verdict, scheduled=False))
        if self.cfg.pulse_owner == "plc":
            return self._plc_owned(seq, code, t_trigger_ns, now)
        width = int(self.cfg.pulse_ms * 1e6)
        if self.cfg.delay_mode == "encoder":
            target = self.counters.encoder.value_at(t_trigger_ns) if self.counters else None
            self._result(seq, code, now, None, None)
            if target is None:
                self.alarms.event("encoder", f"part {seq}: no encoder reading around its trigger; pulse fired now")
                self.worker.push(now, EncoderPulseJob(seq, None, width, now))
                return ActuationResult(seq, verdict, True, note="encoder unknown: fired at once")
            self.worker.push(now, EncoderPulseJob(seq, target + self.cfg.delay_counts, width, now))
            return ActuationResult(seq, verdict, True, note=f"at encoder {target + self.cfg.delay_counts}")
        t_on = t_trigger_ns + int(self.cfg.delay_ms * 1e6)
        self._result(seq, code, now, None, None)
        if now + self.worker.rtt_ns // 2 > t_on:
            return self._late(seq, verdict, now, t_on, width)
        self._pulse(seq, t_on, width)
        return ActuationResult(seq, verdict, True, pulse_at_ns=t_on)

    def _result(self, seq: int, code: int, now: int, reject_cmd, out: ActuationResult | None) -> ActuationResult | None:
        self.worker.newest_result = seq
        self.worker.push(now, ResultJob(seq, code, reject_cmd))
        return out

    def _pulse(self, seq: int, t_on: int, width: int) -> None:
        slip = int(self.cfg.max_edge_slip_ms * 1e6)
        if self.counters is not None and self.cfg.modbus.hr_reject_cmd is not None:
            clock = self.counters.clock.value_at(t_on)  # the PLC's clock at the pulse's start
            if clock is not None:  # written ahead of the edge, so the edge itself is one write
                guard = (clock + round((width + slip) / 1e6)) & 0xFFFF
                self.worker.push(t_on - GUARD_LEAD_NS, GuardJob(seq, guard))
        self.worker.push(t_on, EdgeJob(seq, True, t_on, t_on + slip))
        self.worker.push(t_on + width, EdgeJob(seq, False, t_on + width, t_on + width + 10**12))

    def _plc_owned(self, seq: int, code: int, t_trigger_ns: int, now: int) -> ActuationResult:
        if self.cfg.delay_mode == "encoder":
            base, add, unit = self.counters.encoder.value_at(t_trigger_ns), self.cfg.delay_counts, "encoder"
        else:
            base, add, unit = self.counters.clock.value_at(t_trigger_ns), round(self.cfg.delay_ms), "PLC clock"
        if base is None:
            self._result(seq, code, now, None, None)
            self._missed(seq, 0.0, f"no {unit} reading around its trigger to target the PLC's reject")
            return ActuationResult(seq, "FAIL", False, note=f"{unit} unknown: no reject request")
        target = (base + add) & 0xFFFF
        self._result(seq, code, now, (seq & 0xFFFF, target), None)
        return ActuationResult(seq, "FAIL", True, note=f"PLC fires at {unit} {target}")

    def _late(self, seq: int, verdict: str, now: int, t_on: int, width: int) -> ActuationResult:
        self._count("late")
        late_ms = (now - t_on) / 1e6
        policy = self.cfg.late_policy
        if policy == "reject_now" and late_ms > self.cfg.reject_now_max_late_ms:
            policy = "stop_line"  # a pulse this late would hit another part
        self.alarms.event("late_decision", f"part {seq}: decision {late_ms:.1f} ms after its reject time "
                                           f"(policy {policy})")
        if policy == "stop_line":
            self.stop_line(seq, f"part {seq}'s decision came {late_ms:.0f} ms after its reject time")
        elif policy == "reject_now":
            self._pulse(seq, now, width)
            log.warning("part %d: reject pulse fired %.1f ms late (reject_now)", seq, late_ms)
        return ActuationResult(seq, verdict, scheduled=policy == "reject_now", late=True,
                               note=f"late by {late_ms:.1f} ms, {policy}")

    def _missed(self, seq: int, overdue_ms: float, why: str) -> None:
        self.pulses.missed(seq, overdue_ms, why)
        if self.cfg.late_policy == "stop_line":
            self.stop_line(seq, f"part {seq}'s reject was missed: {why}")

    # ------------------------------------------------------------------ line
    def stop_line(self, seq: int, reason: str) -> None:
        """Raise the stop-line output now."""
        self.worker.push(time.monotonic_ns(), StopLineJob(seq, reason))

    def reset_stop_line(self, reason: str) -> None:
        """Release the stop-line output (an operator's reset on the page; the API audits who)."""
        self.worker.push(time.monotonic_ns(), StopLineJob(-1, reason, on=False))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until every queued job has run (end of a replay)."""
        return self.worker.timeline.wait_empty(timeout)

    def close(self) -> list[int]:
        """Stop at once and leave the outputs safe (reject off, state 'stopped'); return parts whose pulse
        never ran, which are logged."""
        if self.counters is not None:
            self.counters.stop()
        pending = self.worker.close()
        if pending:
            log.error("stopped with %d reject pulse(s) not fired, parts %s: check them by hand", len(pending), pending)
        return pending
