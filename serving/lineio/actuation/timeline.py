"""A time-ordered queue of actuator jobs that hands each one out at its moment.

The actuator's worker waits on it: coarse sleep until ``SPIN_NS`` before a job's time, then a
busy-wait for the last stretch, because a thread woken by the OS can be a millisecond late.

>>> tl = Timeline()
>>> tl.push(time.monotonic_ns(), "job")
>>> tl.next_due(lambda job: 0, until_ns=time.monotonic_ns() + 10_000_000)[1]
'job'
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Timeline(Generic[T]):
    """Jobs keyed by monotonic time (ns); ties keep their submission order."""

    SPIN_NS = 1_500_000  # busy-wait the last 1.5 ms before a job

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self.closed = False

    def push(self, t_ns: int, job: T) -> None:
        """Queue ``job`` for ``t_ns``."""
        with self._cv:
            heapq.heappush(self._heap, (t_ns, next(self._order), job))
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._heap)

    def peek_ns(self) -> int | None:
        """When the next job is due (monotonic ns), or None with nothing queued."""
        with self._cv:
            return self._heap[0][0] if self._heap else None

    def close(self) -> None:
        """Wake the worker and make :meth:`next_due` return ``False``."""
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def next_due(self, lead_ns: Callable[[T], int], until_ns: int) -> tuple[int, T] | None | bool:
        """The next job at its time minus ``lead_ns(job)``: ``(t_ns, job)``; None when ``until_ns`` comes first
        (the caller's own periodic work is due); False once closed."""
        with self._cv:
            while not self.closed:
                now = time.monotonic_ns()
                due = self._heap[0][0] - lead_ns(self._heap[0][2]) if self._heap else None
                if due is not None and due - now <= self.SPIN_NS:
                    t_ns, _, job = heapq.heappop(self._heap)
                    break
                wake = until_ns if due is None else min(until_ns, due - self.SPIN_NS)
                if wake <= now:
                    return None
                self._cv.wait((wake - now) / 1e9)
            else:
                return False
        while time.monotonic_ns() < due:
            pass
        return t_ns, job

    def drain(self) -> list[T]:
        """Remove and return every queued job, in time order."""
        with self._cv:
            jobs = [job for _, _, job in sorted(self._heap)]
            self._heap.clear()
            return jobs

    def wait_empty(self, timeout: float) -> bool:
        """Block until nothing is queued (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not len(self):
                return True
            time.sleep(0.005)
        return not len(self)
