"""What a part needs after its verdict has reached the actuator, on a thread of its own.

A kept part's evidence (two PNGs, the explanation picture, the encrypted write) costs more than its scoring on a
bottle-sized frame: 55 + 14 + 3 ms median on this 2-core CPU, against ~20 ms of scoring. On the inspection thread
that work made the next part wait in the capture queue, and at 10 parts/s its trigger -> actuation command grew
to 130-220 ms. Here it runs beside the next part's inspection instead, in order, one part after another.

The queue is bounded: when evidence falls further behind than ``depth`` parts, the inspection thread waits for
it (as it did before), so memory stays bounded and no record is dropped. The price: a station killed outright
(power cut, SIGKILL) loses the records of the parts still queued, at most ``depth`` + 1 parts whose verdicts were
already sent, where it lost at most one before, and the next start issues their sequence numbers again (under a
new boot id); a normal stop writes them all. A job submitted while the worker is not running (before ``start``,
or once ``close`` has begun) runs on the caller's thread, after the worker has finished what it holds.

>>> after = AfterPart(alarms).start()        # doctest: +SKIP
>>> after.submit(lambda: store.record(rec))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
import time
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
        # a job is queued only under this lock and only before close() has begun, so none lands behind the stop
        # sentinel; nobody holds it while waiting
        self._lock = threading.Lock()

    def start(self) -> "AfterPart":
        """Start the worker."""
        self._thread = threading.Thread(target=self._run, name="after-part", daemon=True)
        self._thread.start()
        return self

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    def submit(self, job: Callable[[], object], timeout: float | None = None) -> bool:
        """Queue ``job``, waiting while ``depth`` jobs are queued (at most ``timeout`` s, then False: not queued);
        when the worker is not running, run it here."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._running():
                    break
                try:
                    self._jobs.put_nowait(job)
                    return True
                except queue.Full:
                    pass
            if give_up is not None and time.monotonic() > give_up:
                return False
            time.sleep(0.002)  # the worker is behind: the inspection waits, as it did before this thread
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(10.0)  # the worker's parts first: records stay in part order
        self._call(job)
        return True

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every job submitted before this call has run; False if that took more than ``timeout`` s
        (a hung evidence disk must not hang the caller: an API request, the end of a replay)."""
        done = threading.Event()
        t0 = time.monotonic()
        return self.submit(done.set, timeout) and done.wait(max(0.0, timeout - (time.monotonic() - t0)))

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued, then stop the worker; waits at most about ``timeout`` s (a hung disk must not keep
        the station from stopping)."""
        t = self._thread
        with self._lock:
            if t is None or not t.is_alive() or self._closing:
                return
            self._closing = True
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            log.error("evidence writing is stuck: %d parts' records not written at the stop", self._jobs.qsize())
            return
        t.join(timeout)
        if t.is_alive():
            log.error("evidence writing did not finish within %.0f s of the stop", timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._call(job)

    def _call(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - one part's evidence must not stop the next parts'
            log.exception("a part's evidence could not be kept")
            try:
                self.alarms.event("evidence", f"a part's record could not be written: {type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - nor may the alarm that reports it
                log.exception("the evidence alarm could not be raised")
