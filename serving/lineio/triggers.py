"""Triggers: when to capture a part. Free-run pacing, a Modbus coil the PLC sets, or an HTTP call.

Each trigger's ``wait(stop)`` blocks until the next part and returns its monotonic time (ns),
or None when the station stops.

>>> FreeRunTrigger(10.0).period_ns
100000000
"""

from __future__ import annotations

import queue
import threading
import time

from serving.alarms import Alarms


class FreeRunTrigger:
    """Paces captures at ``rate_hz``; a capture that starts a full period late is counted late."""

    def __init__(self, rate_hz: float) -> None:
        self.period_ns = int(1e9 / rate_hz)
        self.next_ns: int | None = None
        self.late = 0

    def wait(self, stop: threading.Event) -> int | None:
        """Block until the next slot; return its monotonic time (ns) or None when stopped."""
        now = time.monotonic_ns()
        if self.next_ns is None:
            self.next_ns = now
        if now < self.next_ns:
            if stop.wait((self.next_ns - now) / 1e9):
                return None
        elif now - self.next_ns > self.period_ns:
            self.late += 1
            self.next_ns = now
        t = self.next_ns
        self.next_ns += self.period_ns
        return t


class HttpTrigger:
    """Triggers pushed by an HTTP call (``POST /api/trigger``), timestamped on arrival."""

    def __init__(self) -> None:
        self.q: queue.Queue[int] = queue.Queue()

    def fire(self, t_ns: int | None = None) -> None:
        """Record a trigger now (or at ``t_ns``)."""
        self.q.put(t_ns or time.monotonic_ns())

    def wait(self, stop: threading.Event) -> int | None:
        """Next trigger time, or None when stopped."""
        while not stop.is_set():
            try:
                return self.q.get(timeout=0.05)
            except queue.Empty:
                continue
        return None


class ModbusTrigger:
    """The PLC sets a coil to request a capture; the rising edge is timestamped and the coil reset."""

    def __init__(self, client_factory, coil: int, device_id: int, poll_ms: float, alarms: Alarms) -> None:
        self.factory, self.coil, self.device_id = client_factory, coil, device_id
        self.poll_s, self.alarms = poll_ms / 1e3, alarms
        self.client = None

    def wait(self, stop: threading.Event) -> int | None:
        """Poll the trigger coil until it is set; return the detection time (ns)."""
        delay = 0.2
        while not stop.is_set():
            try:
                if self.client is None:
                    self.client = self.factory()
                rr = self.client.read_coils(self.coil, count=1, device_id=self.device_id)
                if rr.isError():
                    raise ConnectionError(str(rr))
                self.alarms.clear("trigger")
                delay = 0.2
                if rr.bits[0]:
                    t = time.monotonic_ns()
                    reset = self.client.write_coil(self.coil, False, device_id=self.device_id)
                    if reset.isError():  # a coil left set would trigger a phantom part on the next poll
                        raise ConnectionError(f"cannot reset trigger coil {self.coil}: {reset}")
                    return t
                stop.wait(self.poll_s)
            except Exception as exc:  # noqa: BLE001 - any transport error: alarm, back off, retry
                self.alarms.raise_("trigger", f"trigger PLC unreachable ({exc}); retrying")
                self.client = None
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        return None
