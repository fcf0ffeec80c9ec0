"""Triggers: when to capture a part, and the best timestamp of that moment the protocol allows.

Each trigger's ``wait(stop)`` blocks until the next part and returns a :class:`Tick` (monotonic
time, ns), or None when the station stops.

- ``free_run``: paced by the station's clock;
- ``modbus`` (coil): the PLC sets a coil, the station polls it every ``trigger_poll_ms`` and
  timestamps the rising edge at the middle of the gap in which it appeared (error: half the poll
  gap plus half a round trip); in ``modbus.mode: server`` the PLC writes the coil to the station,
  which timestamps the write on arrival;
- ``modbus_counter``: the PLC counts triggers and stores its own clock at each one; the station
  maps that clock onto its own (no dependence on the station's poll, see ``counters.py``);
- ``http``: a device or person POSTs ``/api/trigger``; timestamped on arrival;
- ``gpio``: a hardware input's edge, timestamped by the kernel (libgpiod, import-guarded).

>>> FreeRunTrigger(10.0).period_ns
100000000
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from serving.alarms import Alarms
from serving.lineio.frames import Tick


class FreeRunTrigger:
    """Paces captures at ``rate_hz``; a capture that starts a full period late is counted late."""

    def __init__(self, rate_hz: float) -> None:
        self.period_ns = int(1e9 / rate_hz)
        self.next_ns: int | None = None
        self.late = 0

    def wait(self, stop: threading.Event) -> Tick | None:
        """Block until the next slot; its monotonic time, or None when stopped."""
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
        return Tick(t)


class QueuedTrigger:
    """Triggers pushed from elsewhere (HTTP, the station's Modbus server, PLC counters, GPIO), timestamped there."""

    def __init__(self) -> None:
        self.q: queue.Queue[Tick] = queue.Queue()

    def fire(self, t_ns: int | None = None, lost: str | None = None) -> None:
        """Record a trigger at ``t_ns`` (default now); ``lost`` marks a part that cannot be seen."""
        self.q.put(Tick(t_ns or time.monotonic_ns(), lost))

    def wait(self, stop: threading.Event) -> Tick | None:
        """The next trigger, or None when stopped."""
        while not stop.is_set():
            try:
                return self.q.get(timeout=0.05)
            except queue.Empty:
                continue
        return None


class HttpTrigger(QueuedTrigger):
    """``POST /api/trigger`` (a device key or a login): timestamped on arrival."""


class ModbusCoilTrigger:
    """Client mode: the PLC sets a coil; the station polls it, timestamps the edge and resets the coil."""

    def __init__(self, client_factory: Callable, coil: int, device_id: int, poll_ms: float, alarms: Alarms) -> None:
        self.factory, self.coil, self.device_id = client_factory, coil, device_id
        self.poll_s, self.alarms = poll_ms / 1e3, alarms
        self.client = None
        self._last_clear_ns: int | None = None  # middle of the last poll that saw the coil clear

    def wait(self, stop: threading.Event) -> Tick | None:
        """Poll the coil until it is set; the edge's estimated time."""
        delay = 0.2
        while not stop.is_set():
            try:
                if self.client is None:
                    self.client = self.factory()
                t0 = time.monotonic_ns()
                rr = self.client.read_coils(self.coil, count=1, device_id=self.device_id)
                mid = (t0 + time.monotonic_ns()) // 2
                if rr.isError():
                    raise ConnectionError(str(rr))
                self.alarms.clear("trigger")
                delay = 0.2
                if rr.bits[0]:
                    # the edge came between the last clear reading and this one: take the middle of that gap, when
                    # polling was continuous; after a pause (the station was capturing) all we know is "before t0"
                    fresh = self._last_clear_ns is not None and mid - self._last_clear_ns < 3 * self.poll_s * 1e9 + 2e6
                    t = (self._last_clear_ns + mid) // 2 if fresh else t0
                    reset = self.client.write_coil(self.coil, False, device_id=self.device_id)
                    if reset.isError():  # a coil left set would trigger a phantom part on the next poll
                        raise ConnectionError(f"cannot reset trigger coil {self.coil}: {reset}")
                    self._last_clear_ns = time.monotonic_ns()
                    return Tick(t)
                self._last_clear_ns = mid
                stop.wait(self.poll_s)
            except Exception as exc:  # noqa: BLE001 - any transport error: alarm, back off, retry
                self.alarms.raise_("trigger", f"trigger PLC unreachable ({exc}); retrying")
                self.client, self._last_clear_ns = None, None
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        return None


class ServerCoilTrigger(QueuedTrigger):
    """Server mode: the PLC writes the trigger coil into the station's own Modbus server."""

    def __init__(self, server, coil: int) -> None:
        super().__init__()
        self.server, self.coil = server, coil
        server.listeners.append(self._on_write)

    def _on_write(self, table: int, address: int, values: list[int], t_ns: int) -> None:
        from serving.lineio.modbus_server import FC_COILS

        if table == FC_COILS and address <= self.coil < address + len(values) and values[self.coil - address]:
            self.fire(t_ns)
            threading.Thread(target=self.server.set, args=(FC_COILS, self.coil, [False]), daemon=True).start()


class CounterTrigger(QueuedTrigger):
    """The PLC's trigger counter: each new count becomes a trigger at the PLC clock's time, on the station's clock."""

    def __init__(self, clock, alarms: Alarms) -> None:
        super().__init__()
        self.clock, self.alarms = clock, alarms

    def on_counter(self, delta: int, counters, read_ns: int) -> None:
        """Called by the counter poll with how many triggers came since the last read."""
        for _ in range(delta - 1):  # the PLC only keeps the last trigger's clock: earlier ones are unseen parts
            self.fire(read_ns, lost=f"trigger missed: {delta} triggers between two counter reads")
        if delta > 1:
            self.alarms.event("trigger", f"{delta - 1} trigger(s) came faster than the counter poll; "
                                         "those parts were rejected unseen")
        t = None
        if counters.trigger_clock is not None:
            value = self.clock.unwrap_past(counters.trigger_clock)
            t = self.clock.time_of(value) if value is not None else None
        self.fire(t if t is not None else read_ns)


class GpioTrigger(QueuedTrigger):
    """A hardware input (libgpiod v2): the kernel timestamps each edge on CLOCK_MONOTONIC. Import-guarded."""

    def __init__(self, chip: str, line: int, rising: bool, alarms: Alarms) -> None:
        super().__init__()
        try:
            import gpiod
        except ImportError:
            raise ConnectionError("the gpio trigger needs `pip install gpiod` (libgpiod v2) on the station") from None
        edge = gpiod.line.Edge.RISING if rising else gpiod.line.Edge.FALLING
        self.request = gpiod.request_lines(f"/dev/{chip}", consumer="lineguard-trigger", config={
            line: gpiod.LineSettings(edge_detection=edge, event_clock=gpiod.line.Clock.MONOTONIC)})
        threading.Thread(target=self._events, name="gpio-trigger", daemon=True).start()

    def _events(self) -> None:
        while True:
            for event in self.request.read_edge_events():
                self.fire(event.timestamp_ns)
