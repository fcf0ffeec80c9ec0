"""Conveyor encoder tracking: polls the PLC's encoder register on its own connection and unwraps 16 bits.

>>> tracker = EncoderTracker(lambda: None, Alarms())   # doctest: +SKIP
>>> tracker.start(); tracker.at(time.monotonic_ns())  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable

from serving.alarms import Alarms
from serving.lineio.actuation.base import ActuatorBackend

WINDOW_NS = 50_000_000  # readings this far either side of a time still place it


class EncoderTracker:
    """A history of (monotonic time, unwrapped count), filled by a polling thread started with :meth:`start`."""

    def __init__(self, backend_factory: Callable[[], ActuatorBackend], alarms: Alarms, period_s: float = 0.001) -> None:
        self.factory, self.alarms, self.period_s = backend_factory, alarms, period_s
        self._history: deque[tuple[int, int]] = deque(maxlen=4096)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "EncoderTracker":
        """Start polling."""
        self._thread = threading.Thread(target=self._poll, name="encoder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def latest(self) -> int | None:
        """The newest count, or None before the first reading."""
        return self._history[-1][1] if self._history else None

    def at(self, t_ns: int) -> int | None:
        """The count at ``t_ns``, interpolated between readings; None when no reading is near it."""
        hist = list(self._history)
        if not hist or t_ns < hist[0][0] - WINDOW_NS or t_ns > hist[-1][0] + WINDOW_NS:
            return None
        i = bisect.bisect_left([t for t, _ in hist], t_ns)
        if i == 0:
            return hist[0][1]
        if i >= len(hist):
            return hist[-1][1]
        (t0, c0), (t1, c1) = hist[i - 1], hist[i]
        return round(c0 + (c1 - c0) * (t_ns - t0) / max(t1 - t0, 1))

    def _poll(self) -> None:
        # its own connection: the actuator's writes must not wait behind encoder polls
        backend = self.factory()
        wraps, last = 0, None
        while not self._stop.is_set():
            try:
                backend.connect()
                while not self._stop.is_set():
                    t0 = time.monotonic_ns()
                    raw = backend.read_encoder()
                    if last is not None and raw < last - 0x8000:  # 16-bit register wrapped
                        wraps += 1
                    last = raw
                    self._history.append(((t0 + time.monotonic_ns()) // 2, raw + (wraps << 16)))
                    self.alarms.clear("encoder")
                    self._stop.wait(self.period_s)
            except Exception as exc:  # noqa: BLE001 - any transport error: alarm, retry
                self.alarms.raise_("encoder", f"encoder register unreadable: {exc}; retrying")
                self._stop.wait(0.5)
        backend.close()
