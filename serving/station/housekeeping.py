"""The station's housekeeping worker: evidence retention, queued records, sync, and the buffer's metrics.

It runs once a second on its own thread, so none of this ever delays an inspection.

>>> Housekeeper(evidence, cfg.evidence, alarms, metrics).start()   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from serving.alarms import Alarms
from serving.evidence.config import EvidenceConfig
from serving.evidence.retention import enforce_limits
from serving.evidence.store import EvidenceStore
from serving.evidence.sync import sync_evidence
from serving.station.metrics import StationMetrics

log = logging.getLogger("lineguard.station")


class Housekeeper:
    """Retention, retries of queued records, sync when due; ``online`` says whether the last sync reached its target."""

    def __init__(self, evidence: EvidenceStore, cfg: EvidenceConfig, alarms: Alarms, metrics: StationMetrics,
                 also: Callable[[], None] | None = None) -> None:
        self.evidence, self.cfg, self.alarms, self.metrics, self.also = evidence, cfg, alarms, metrics, also
        self.online = False
        self._next_sync = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> "Housekeeper":
        """Start the worker."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker (it finishes the round it is in, and one last round records what is left)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
            if self.also is not None:
                self.also()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.round()
            except Exception:  # noqa: BLE001 - housekeeping must outlive any one failure
                log.exception("housekeeping failed")

    def round(self) -> None:
        """One pass: flush queued records, apply retention and quota, sync when due, update metrics."""
        ev, m = self.evidence, self.metrics
        ev.flush_pending()
        if self.also is not None:
            self.also()
        enforce_limits(ev)
        if self.cfg.sync_url and time.monotonic() >= self._next_sync:
            self._next_sync = time.monotonic() + self.cfg.sync_interval_s
            try:
                sync_evidence(ev)
                self.online = True
                self.alarms.clear("offline")
            except (ConnectionError, OSError) as exc:
                self.online = False
                self.alarms.raise_("offline", f"{exc}; evidence is kept locally", "warning")
        m.online.set(1 if self.online else 0)
        m.buffer_bytes.set(ev.usage_bytes())
        m.unsynced.set(ev.unsynced())
        m.write_failures.set(ev.write_failures)
        m.pending.set(len(ev.pending))
        m.lost.set(ev.pending.lost)
