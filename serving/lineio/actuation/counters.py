"""The PLC's counters on the station's clock: encoder count and PLC millisecond clock, unwrapped.

A thread reads them every ``counter_poll_ms`` on its own connection (the actuator's writes never
wait behind it) and keeps a history of (station monotonic time, value). From it the station
converts both ways: where the encoder was at a trigger, and when (on its own clock) the PLC's
clock showed a given value (:class:`PlcClock`) -- which is how a trigger timestamped by the PLC
becomes independent of the station's poll. A new value of the PLC's trigger counter is handed to ``on_trigger``.

>>> c = PlcCounters(lambda: None, Alarms(), 2.0)   # doctest: +SKIP
>>> c.start(); c.encoder_at(time.monotonic_ns())  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable

from serving.alarms import Alarms
from serving.lineio.actuation.base import ActuatorBackend, Counters

WINDOW_NS = 50_000_000  # readings this far either side of a time still place it


class Unwrapped:
    """A 16-bit counter made monotonic, with its reading times."""

    def __init__(self, maxlen: int = 4096) -> None:
        self.points: deque[tuple[int, int]] = deque(maxlen=maxlen)
        self._wraps = 0
        self._last: int | None = None

    def add(self, t_ns: int, raw: int) -> None:
        """Record a raw 16-bit reading taken at ``t_ns``."""
        if self._last is not None and raw < self._last - 0x8000:
            self._wraps += 1
        self._last = raw
        self.points.append((t_ns, raw + (self._wraps << 16)))

    def latest(self) -> int | None:
        """The newest unwrapped value."""
        return self.points[-1][1] if self.points else None

    def unwrap_past(self, raw: int) -> int | None:
        """The most recent unwrapped value congruent to ``raw`` that is not in the future."""
        latest = self.latest()
        return None if latest is None else latest - ((latest - raw) & 0xFFFF)

    def value_at(self, t_ns: int, extrapolate: bool = False) -> int | None:
        """The value at ``t_ns``, interpolated; None when no reading is near it. ``extrapolate`` continues the
        recent rate into the future (right for a clock, a guess for a conveyor)."""
        pts = list(self.points)
        if extrapolate and len(pts) >= 2 and t_ns > pts[-1][0]:
            (t0, v0), (t1, v1) = pts[max(0, len(pts) - 50)], pts[-1]
            return round(v1 + (v1 - v0) * (t_ns - t1) / max(t1 - t0, 1))
        if not pts or t_ns < pts[0][0] - WINDOW_NS or t_ns > pts[-1][0] + WINDOW_NS:
            return None
        i = bisect.bisect_left([t for t, _ in pts], t_ns)
        if i == 0 or i >= len(pts):
            return pts[0][1] if i == 0 else pts[-1][1]
        (t0, v0), (t1, v1) = pts[i - 1], pts[i]
        return round(v0 + (v1 - v0) * (t_ns - t0) / max(t1 - t0, 1))

    def time_of(self, value: int) -> int | None:
        """When (station monotonic ns) the counter showed ``value`` (unwrapped), interpolated or extrapolated."""
        pts = list(self.points)
        if len(pts) < 2:
            return None
        vals = [v for _, v in pts]
        i = min(max(bisect.bisect_left(vals, value), 1), len(pts) - 1)
        (t0, v0), (t1, v1) = pts[i - 1], pts[i]
        if v1 == v0:  # counter did not move between these readings: use the whole history's rate
            (t0, v0), (t1, v1) = pts[0], pts[-1]
            if v1 == v0:
                return None
        return round(t0 + (value - v0) * (t1 - t0) / (v1 - v0))


class PlcClock:
    """The PLC's millisecond clock placed on the station's clock, NTP-style.

    A reading of value ``c`` that came back at ``t_recv`` proves the clock turned to ``c`` no later than
    ``t_recv``; the earliest such bound over the last few seconds (the readings with the shortest round
    trip) pins the clock's origin to within a fraction of a millisecond, however slow single polls are.
    """

    NS_PER_COUNT = 1_000_000

    def __init__(self, window: int = 2000) -> None:
        self.counts = Unwrapped()
        self._bounds: deque[int] = deque(maxlen=window)  # t_recv - value * 1 ms, per reading

    @property
    def points(self):
        """The raw readings (time, unwrapped value)."""
        return self.counts.points

    def add(self, t_send: int, t_recv: int, raw: int) -> None:
        """Record one reading of the 16-bit clock register."""
        self.counts.add((t_send + t_recv) // 2, raw)
        self._bounds.append(t_recv - self.counts.latest() * self.NS_PER_COUNT)

    def origin(self) -> int | None:
        """Station time (ns) at which the unwrapped clock read 0."""
        return min(self._bounds) if self._bounds else None

    def unwrap_past(self, raw: int) -> int | None:
        """The most recent unwrapped clock value congruent to ``raw``."""
        return self.counts.unwrap_past(raw)

    def time_of(self, value: int) -> int | None:
        """Station time (ns) in the middle of the millisecond the PLC clock showed ``value`` (unwrapped)."""
        o = self.origin()
        return None if o is None else o + value * self.NS_PER_COUNT + self.NS_PER_COUNT // 2

    def value_at(self, t_ns: int, extrapolate: bool = True) -> int | None:
        """The PLC clock's (unwrapped) value at station time ``t_ns``, past or future."""
        o = self.origin()
        return None if o is None else (t_ns - o) // self.NS_PER_COUNT


class PlcCounters:
    """Polls the PLC's counters on its own connection; started with :meth:`start`."""

    def __init__(self, backend_factory: Callable[[], ActuatorBackend], alarms: Alarms, poll_ms: float,
                 on_trigger: Callable[[int, Counters, int], None] | None = None) -> None:
        self.factory, self.alarms, self.period_s = backend_factory, alarms, poll_ms / 1e3
        self.on_trigger = on_trigger
        self.encoder, self.clock = Unwrapped(), PlcClock()
        self._trigger_count: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PlcCounters":
        """Start polling."""
        self._thread = threading.Thread(target=self._poll, name="plc-counters", daemon=True)
        self._thread.start()
        return self

    def wait_first(self, timeout: float) -> bool:
        """Block until the first reading (True) or ``timeout`` seconds (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (self.clock.points or self.encoder.points):
            time.sleep(0.002)
        return bool(self.clock.points or self.encoder.points)

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _poll(self) -> None:
        backend = self.factory()
        while not self._stop.is_set():
            try:
                backend.connect()
                while not self._stop.is_set():
                    t0 = time.monotonic_ns()
                    c = backend.read_counters()
                    t1 = time.monotonic_ns()
                    t = (t0 + t1) // 2  # the reading's best time: the request's midpoint
                    if c.encoder is not None:
                        self.encoder.add(t, c.encoder)
                    if c.clock is not None:
                        self.clock.add(t0, t1, c.clock)
                    self._check_trigger(c, t)
                    self.alarms.clear("plc_counters")
                    self._stop.wait(self.period_s)
            except Exception as exc:  # noqa: BLE001 - any transport error: alarm, retry
                self.alarms.raise_("plc_counters", f"PLC encoder/clock registers unreadable: {exc}; retrying")
                self._stop.wait(0.5)
        backend.close()

    def _check_trigger(self, c: Counters, t_ns: int) -> None:
        if c.trigger_count is None or self.on_trigger is None:
            return
        if self._trigger_count is not None and c.trigger_count != self._trigger_count:
            self.on_trigger((c.trigger_count - self._trigger_count) & 0xFFFF, c, t_ns)
        self._trigger_count = c.trigger_count
