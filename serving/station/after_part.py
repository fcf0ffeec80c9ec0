"""What a part needs after its verdict has reached the actuator, on a thread of its own.

A kept part's evidence (two PNGs, the explanation picture, the encrypted write) costs more than its scoring on a
bottle-sized frame: 55 + 14 + 3 ms median on this 2-core CPU, against ~20 ms of scoring. On the inspection thread
that work made the next part wait in the capture queue, and at 10 parts/s its trigger -> actuation command grew
to 130-220 ms. Here it runs beside the next part's inspection instead, in order, one part after another.

The queue is bounded: when evidence falls further behind than ``depth`` parts, the inspection thread waits for
it (as it did before), so memory stays bounded and no record is dropped. The price: a station killed outright
(power cut, SIGKILL) loses the records of the parts still queued, at most ``depth`` + 1 parts whose verdicts were
already sent, where it lost at most one before; a normal stop writes them all. A job submitted while the thread is
not running (before ``start`` or after ``close``) runs at once, on the caller's thread.

>>> after = AfterPart(alarms).start()        # doctest: +SKIP
>>> after.submit(lambda: store.record(rec))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from serving.alarms import Alarms

log = logging.getLogger("lineguard.station")


class AfterPart:
    """One worker thread running per-part jobs in submission order."""

    def __init__(self, alarms: Alarms, depth: int = 4) -> None:
        self.alarms = alarms
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._closing = False
        self._lock = threading.Lock()  # a job is queued only while the worker will still take it

    def start(self) -> "AfterPart":
        """Start the worker."""
        self._thread = threading.Thread(target=self._run, name="after-part", daemon=True)
        self._thread.start()
        return self

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job`` (waits while ``depth`` jobs are queued); runs it at once when the worker is not running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and not self._closing:
                self._jobs.put(job)
                return
        self._call(job)

    def drain(self) -> None:
        """Wait until every job submitted so far has run."""
        if self._thread is not None and self._thread.is_alive():
            self._jobs.join()

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued, then stop the worker (waits at most ``timeout`` s for it)."""
        t = self._thread
        with self._lock:
            if t is None or not t.is_alive() or self._closing:
                return
            self._closing = True
            self._jobs.put(None)
        t.join(timeout)
        if t.is_alive():
            log.error("evidence writing did not finish within %.0f s of the stop", timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._call(job)
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def _call(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - one part's evidence must not stop the next parts'
            log.exception("a part's evidence could not be kept")
            self.alarms.event("evidence", f"a part's record could not be written: {type(exc).__name__}: {exc}")
