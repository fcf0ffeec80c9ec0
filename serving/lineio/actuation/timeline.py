"""A time-ordered queue of actuator jobs that hands each one out at its moment.

The actuator's worker waits on it: coarse sleep until ``SPIN_NS`` before a job's time, then a
busy-wait for the last stretch, because a thread woken by the OS can be a millisecond late.

>>> tl = Timeline()
>>> tl.push(time.monotonic_ns(), "job")
>>> tl.next_due(lambda job: 0, idle_s=0.01)[1]
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

    def close(self) -> None:
        """Wake the worker and make :meth:`next_due` return ``False``."""
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def next_due(self, lead_ns: Callable[[T], int], idle_s: float) -> tuple[int, T] | None | bool:
        """The next job at its time minus ``lead_ns(job)``: ``(t_ns, job)``; None after ``idle_s`` with
        nothing queued; False once closed."""
        with self._cv:
            if not self._heap and not self.closed:
                self._cv.wait(idle_s)
            while not self.closed and self._heap:
                t_ns, _, job = self._heap[0]
                due = t_ns - lead_ns(job)
                wait_ns = due - time.monotonic_ns()
                if wait_ns <= self.SPIN_NS:
                    heapq.heappop(self._heap)
                    break
                self._cv.wait((wait_ns - self.SPIN_NS) / 1e9)
            else:
                return False if self.closed else None
        while time.monotonic_ns() < due:
            pass
        return t_ns, job

    def wait_empty(self, timeout: float) -> bool:
        """Block until nothing is queued (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not len(self):
                return True
            time.sleep(0.005)
        return not len(self)
