"""Reject actuation: a timed pulse at trigger + delay, over Modbus TCP, GPIO, or nowhere.

One worker thread owns the I/O and a time-ordered job heap, so edges go out in order
and on time: it sleeps until just before an edge, spins the last millisecond, and sends
early by half the measured round trip so the edge *arrives* on time. The delay counts
from the part's trigger timestamp (or its encoder count), never from when the decision
came; a decision past its deadline is counted, alarmed and handled by ``late_policy``.
An unreachable PLC raises an alarm and is retried with backoff; inspection goes on.

>>> act = Actuator(NullBackend(), ActuatorConfig(kind="none"), Alarms())  # doctest: +SKIP
>>> act.submit(1, "FAIL", time.monotonic_ns()).scheduled                   # doctest: +SKIP
True
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from serving.alarms import Alarms
from serving.config import ActuatorConfig, GpioConfig, ModbusConfig

log = logging.getLogger("lineguard.actuation")
VERDICT_CODES = {"PASS": 1, "FAIL": 2}


@dataclass
class ActuationResult:
    """What became of one part's verdict at the actuator."""

    seq: int
    verdict: str
    scheduled: bool
    late: bool = False
    pulse_at_ns: int | None = None
    note: str = ""


class NullBackend:
    """Logs only (``actuator.kind: none``)."""

    name = "none"

    def connect(self) -> None:
        pass

    def set_reject(self, on: bool) -> None:
        log.info("reject output %s", "ON" if on else "off")

    def set_stop_line(self, on: bool) -> None:
        log.warning("stop-line output %s", "ON" if on else "off")

    def write_result(self, seq: int, code: int) -> None:
        log.info("result seq=%d code=%d", seq, code)

    def take_ack(self) -> bool:
        return True

    def read_encoder(self) -> int:
        raise RuntimeError("no encoder on the 'none' actuator; use delay_mode: time")

    def close(self) -> None:
        pass


class ModbusBackend:
    """A PLC over Modbus TCP (pymodbus' synchronous client)."""

    name = "modbus"

    def __init__(self, cfg: ModbusConfig) -> None:
        self.cfg = cfg
        self.client = None

    def connect(self) -> None:
        from pymodbus.client import ModbusTcpClient

        self.close()
        c = ModbusTcpClient(self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s, retries=0,
                            reconnect_delay=0)
        if not c.connect():
            raise ConnectionError(f"PLC at {self.cfg.host}:{self.cfg.port} unreachable")
        self.client = c

    def _check(self, rr, what: str):
        if rr.isError():
            raise ConnectionError(f"PLC refused {what}: {rr}")
        return rr

    def set_reject(self, on: bool) -> None:
        self._check(self.client.write_coil(self.cfg.coil_reject, on, device_id=self.cfg.device_id), "reject coil")

    def set_stop_line(self, on: bool) -> None:
        self._check(self.client.write_coil(self.cfg.coil_stop_line, on, device_id=self.cfg.device_id), "stop-line coil")

    def write_result(self, seq: int, code: int) -> None:
        c, d = self.cfg, self.cfg.device_id
        self._check(self.client.write_registers(min(c.hr_sequence, c.hr_verdict), _pair(c, seq & 0xFFFF, code),
                                                device_id=d), "result registers")
        self._check(self.client.write_coil(c.coil_result_ready, True, device_id=d), "result-ready coil")

    def take_ack(self) -> bool:
        c, d = self.cfg, self.cfg.device_id
        rr = self._check(self.client.read_coils(c.coil_ack, count=1, device_id=d), "ack coil")
        if rr.bits[0]:
            self._check(self.client.write_coil(c.coil_ack, False, device_id=d), "ack coil")
            self._check(self.client.write_coil(c.coil_result_ready, False, device_id=d), "result-ready coil")
            return True
        return False

    def read_encoder(self) -> int:
        rr = self._check(self.client.read_holding_registers(self.cfg.hr_encoder, count=1, device_id=self.cfg.device_id),
                         "encoder register")
        return int(rr.registers[0])

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _pair(c: ModbusConfig, seq: int, code: int) -> list[int]:
    if abs(c.hr_sequence - c.hr_verdict) != 1:
        raise ValueError("actuator.modbus: hr_sequence and hr_verdict must be adjacent registers")
    return [seq, code] if c.hr_sequence < c.hr_verdict else [code, seq]


class GpioBackend:
    """A reject line on a GPIO chip: libgpiod (``gpiod``) or, on Jetson, ``Jetson.GPIO``."""

    name = "gpio"

    def __init__(self, cfg: GpioConfig) -> None:
        self.cfg = cfg
        self._set = None

    def connect(self) -> None:
        level = (lambda on: on) if self.cfg.active_high else (lambda on: not on)
        try:
            import gpiod  # libgpiod v2 Python bindings

            req = gpiod.request_lines(f"/dev/{self.cfg.chip}", consumer="lineguard", config={
                self.cfg.line: gpiod.LineSettings(direction=gpiod.line.Direction.OUTPUT)})
            self._set = lambda on: req.set_value(self.cfg.line, gpiod.line.Value.ACTIVE if level(on) else gpiod.line.Value.INACTIVE)
        except ImportError:
            try:
                import Jetson.GPIO as GPIO  # noqa: N814
            except ImportError:
                raise ConnectionError("GPIO actuator needs `pip install gpiod` (libgpiod) or Jetson.GPIO (JetPack)") from None
            GPIO.setmode(GPIO.BCM)
            GPIO.setup(self.cfg.line, GPIO.OUT, initial=GPIO.LOW if self.cfg.active_high else GPIO.HIGH)
            self._set = lambda on: GPIO.output(self.cfg.line, GPIO.HIGH if level(on) else GPIO.LOW)

    def set_reject(self, on: bool) -> None:
        self._set(on)

    def set_stop_line(self, on: bool) -> None:
        log.warning("stop-line requested; no stop-line GPIO configured")

    def write_result(self, seq: int, code: int) -> None:
        pass

    def take_ack(self) -> bool:
        return True

    def read_encoder(self) -> int:
        raise RuntimeError("GPIO actuator has no encoder input; use delay_mode: time")

    def close(self) -> None:
        pass


def make_backend(cfg: ActuatorConfig):
    """The backend for ``actuator.kind``."""
    return {"modbus": lambda: ModbusBackend(cfg.modbus), "gpio": lambda: GpioBackend(cfg.gpio),
            "none": NullBackend}[cfg.kind]()


class Actuator:
    """Schedules results and reject pulses on one I/O worker thread."""

    SPIN_NS = 1_500_000  # busy-wait the last 1.5 ms before an edge
    MAX_EDGE_SLIP_MS = 20.0  # a reject edge later than this is dropped, not fired on the wrong part
    ENCODER_TIMEOUT_S = 10.0

    def __init__(self, backend, cfg: ActuatorConfig, alarms: Alarms, metrics=None) -> None:
        self.backend, self.cfg, self.alarms, self.metrics = backend, cfg, alarms, metrics
        self._heap: list[tuple[int, int, str, tuple]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._stop = False
        self.connected = False
        self.rtt_ns = 2_000_000
        self.counts = {"pulses": 0, "late": 0, "errors": 0, "handshake_missed": 0, "results": 0}
        self.edges: deque[tuple[str, int, int]] = deque(maxlen=10_000)  # (edge, seq, sent monotonic ns)
        self._encoder: deque[tuple[int, int]] = deque(maxlen=4096)  # (t_ns, count)
        self._awaiting_ack = False
        self._active_pulses = 0
        self._thread = threading.Thread(target=self._run, name="actuator", daemon=True)
        self._thread.start()
        if cfg.delay_mode == "encoder":
            threading.Thread(target=self._poll_encoder, name="encoder", daemon=True).start()

    # ------------------------------------------------------------------ API
    def submit(self, seq: int, verdict: str, t_trigger_ns: int) -> ActuationResult:
        """Queue the part's result and, on FAIL, its reject pulse at trigger + delay."""
        now = time.monotonic_ns()
        self._push(now, "result", (seq, VERDICT_CODES.get(verdict, 3)))
        if verdict != "FAIL":
            return ActuationResult(seq, verdict, scheduled=False)
        width = int(self.cfg.pulse_ms * 1e6)
        if self.cfg.delay_mode == "encoder":
            target = self.encoder_at(t_trigger_ns)
            if target is None:
                self._count("errors")
                self.alarms.raise_("encoder", "no encoder reading around the trigger; pulse fired now")
                self._push(now, "pulse_encoder", (seq, None, width))
                return ActuationResult(seq, verdict, True, note="encoder unknown")
            self._push(now, "pulse_encoder", (seq, target + self.cfg.delay_counts, width))
            return ActuationResult(seq, verdict, True, note=f"at encoder {target + self.cfg.delay_counts}")
        t_on = t_trigger_ns + int(self.cfg.delay_ms * 1e6)
        if now + self.rtt_ns // 2 > t_on:
            return self._late(seq, verdict, now, t_on, width)
        self._push(t_on, "on", (seq,))
        self._push(t_on + width, "off", (seq,))
        return ActuationResult(seq, verdict, True, pulse_at_ns=t_on)

    def _late(self, seq: int, verdict: str, now: int, t_on: int, width: int) -> ActuationResult:
        self._count("late")
        late_ms = (now - t_on) / 1e6
        self.alarms.raise_("late_decision", f"part {seq}: decision {late_ms:.1f} ms after its reject time "
                                            f"(policy {self.cfg.late_policy})")
        if self.cfg.late_policy == "stop_line":
            self._push(now, "stop_line", (seq,))
        elif self.cfg.late_policy == "reject_now":
            self._push(now, "on", (seq,))
            self._push(now + width, "off", (seq,))
        return ActuationResult(seq, verdict, scheduled=self.cfg.late_policy == "reject_now", late=True,
                               note=f"late by {late_ms:.1f} ms")

    def encoder_at(self, t_ns: int) -> int | None:
        """Encoder count at ``t_ns``, interpolated from the poll history."""
        hist = list(self._encoder)
        if not hist or t_ns < hist[0][0] - 50_000_000 or t_ns > hist[-1][0] + 50_000_000:
            return None
        i = bisect.bisect_left([t for t, _ in hist], t_ns)
        if i == 0:
            return hist[0][1]
        if i >= len(hist):
            return hist[-1][1]
        (t0, c0), (t1, c1) = hist[i - 1], hist[i]
        return round(c0 + (c1 - c0) * (t_ns - t0) / max(t1 - t0, 1))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until every queued job has run (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                if not self._heap:
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        """Finish queued jobs (briefly), then stop the worker and close the I/O."""
        self.wait_idle(2.0)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(2.0)
        self.backend.close()

    # ------------------------------------------------------------------ worker
    def _count(self, key: str) -> None:
        self.counts[key] += 1
        if self.metrics is not None:
            self.metrics.actuation_event(key)

    def _push(self, t_ns: int, kind: str, args: tuple) -> None:
        with self._cv:
            heapq.heappush(self._heap, (t_ns, next(self._order), kind, args))
            self._cv.notify_all()

    def _ensure_connected(self) -> bool:
        if self.connected:
            return True
        try:
            self.backend.connect()
        except Exception as exc:  # noqa: BLE001 - any transport failure means "not connected"
            self.alarms.raise_("plc", f"actuator {self.backend.name}: {exc}; retrying with backoff")
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
            with self._cv:
                while not self._stop and not self._heap:
                    self._cv.wait(0.1)
                    if not self.connected and time.monotonic() >= next_retry:
                        break  # idle: keep trying the PLC so the page shows its real state
                if self._stop:
                    return
                idle = not self._heap
            if idle:
                if not self._ensure_connected():
                    next_retry = time.monotonic() + backoff
                    backoff = min(backoff * 2, self.cfg.retry_max_s)
                else:
                    backoff = self.cfg.retry_initial_s
                continue
            with self._cv:
                if not self._heap:
                    continue
                t_ns, _, kind, args = self._heap[0]
                lead = self.rtt_ns // 2 if kind in ("on", "off") else 0
                wait_ns = t_ns - lead - time.monotonic_ns()
                if wait_ns > self.SPIN_NS:
                    self._cv.wait((wait_ns - self.SPIN_NS) / 1e9)
                    continue
                heapq.heappop(self._heap)
            while time.monotonic_ns() < t_ns - lead:
                pass
            connected = self._ensure_connected()
            # checked after connecting: a reconnect can itself take up to the I/O timeout
            if kind == "on" and (time.monotonic_ns() - t_ns) / 1e6 > self.MAX_EDGE_SLIP_MS:
                self._missed(args[0], (time.monotonic_ns() - t_ns) / 1e6)
                continue
            if not connected:
                self._retry(kind, args)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_s)
                continue
            backoff = self.cfg.retry_initial_s
            try:
                self._do(kind, args)
            except Exception as exc:  # noqa: BLE001 - a failed write: alarm, reconnect, retry what must not be lost
                self.connected = False
                self.alarms.raise_("plc", f"actuator {self.backend.name}: {kind} for part {args[0]} failed: {exc}")
                self._retry(kind, args)

    def _retry(self, kind: str, args: tuple) -> None:
        """A job that could not run. Edges and stop-line are retried (an 'on' is re-checked against the
        slip limit when it comes round again); a stale result is not, the next part's result supersedes it."""
        self._count("errors")
        if kind != "result":
            self._push(time.monotonic_ns(), kind, args)

    def _missed(self, seq: int, overdue_ms: float) -> None:
        # A pulse this late would hit the wrong part: drop it, count it, say so, apply the late policy.
        self._count("errors")
        self.alarms.raise_("pulse_missed", f"reject pulse for part {seq} missed by {overdue_ms:.0f} ms "
                                           "(actuator was unavailable); check that part by hand")
        if self.cfg.late_policy == "stop_line":
            self._push(time.monotonic_ns(), "stop_line", (seq,))

    def _do(self, kind: str, args: tuple) -> None:
        t0 = time.monotonic_ns()
        if kind == "result":
            if self._awaiting_ack and not self.backend.take_ack():
                self._count("handshake_missed")
                self.alarms.raise_("handshake", f"PLC did not acknowledge the result before part {args[0]}")
            self.backend.write_result(*args)
            self._awaiting_ack = True
            self._count("results")
        elif kind == "on":
            self._active_pulses += 1
            if self._active_pulses == 1:
                self.backend.set_reject(True)
            self.edges.append(("on", args[0], t0))
            self._count("pulses")
        elif kind == "off":
            # overlapping pulses (two FAILs closer than the width) merge: off only when the last one ends
            self._active_pulses = max(0, self._active_pulses - 1)
            if self._active_pulses == 0:
                self.backend.set_reject(False)
            self.edges.append(("off", args[0], t0))
        elif kind == "stop_line":
            self.backend.set_stop_line(True)
            self.edges.append(("stop_line", args[0], t0))
        elif kind == "pulse_encoder":
            self._encoder_step(*args)
            return
        rtt = time.monotonic_ns() - t0
        if kind in ("on", "off"):
            self.rtt_ns = int(0.8 * self.rtt_ns + 0.2 * rtt)

    def _encoder_step(self, seq: int, target: int | None, width: int, since: int | None = None) -> None:
        """Fire when the encoder reaches ``target``; otherwise look again in 0.5 ms (never block the worker)."""
        now = time.monotonic_ns()
        since = since or now
        reached = target is None or (self._encoder and self._encoder[-1][1] >= target)
        if reached:
            self._push(now, "on", (seq,))
            self._push(now + width, "off", (seq,))
        elif now - since > int(self.ENCODER_TIMEOUT_S * 1e9):
            self._count("late")
            self.alarms.raise_("encoder", f"part {seq}: encoder did not reach {target} within "
                                          f"{self.ENCODER_TIMEOUT_S:g} s (line stopped or encoder lost)")
            if self.cfg.late_policy == "stop_line":
                self._push(now, "stop_line", (seq,))
        else:
            self._push(now + 500_000, "pulse_encoder", (seq, target, width, since))

    def _poll_encoder(self) -> None:
        # a second connection: the worker's must not wait behind encoder polls
        backend = make_backend(self.cfg)
        wraps, last = 0, None
        while not self._stop:
            try:
                backend.connect()
                while not self._stop:
                    t0 = time.monotonic_ns()
                    raw = backend.read_encoder()
                    if last is not None and raw < last - 0x8000:  # 16-bit register wrapped
                        wraps += 1
                    last = raw
                    self._encoder.append(((t0 + time.monotonic_ns()) // 2, raw + (wraps << 16)))
                    self.alarms.clear("encoder")
                    time.sleep(0.001)
            except Exception as exc:  # noqa: BLE001
                self.alarms.raise_("encoder", f"encoder register unreadable: {exc}; retrying")
                time.sleep(0.5)
