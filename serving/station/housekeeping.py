"""The station's housekeeping worker: evidence retention, queued records, sync, and the buffer's metrics.

It runs once a second on its own thread, so none of this ever delays an inspection. It also keeps the
sync status the page shows (:class:`SyncStatus`: target, online, backlog, its age, the last sync).

>>> Housekeeper(evidence, cfg.evidence, alarms, metrics).start()   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.alarms import Alarms
from serving.errors import ConfigError
from serving.evidence.config import EvidenceConfig
from serving.evidence.retention import enforce_limits
from serving.evidence.store import EvidenceStore
from serving.evidence.sync import sync_evidence
from serving.evidence.target import display_url, open_target
from serving.station.metrics import StationMetrics

log = logging.getLogger("lineguard.station")


@dataclass(frozen=True)
class SyncStatus:
    """Where evidence goes and how far behind it is (the ``sync`` object of ``/api/state``)."""

    target: str | None  #: the sync URL without credentials; None when no sync is configured
    online: bool  #: the last sync round reached the target
    backlog_records: int  #: records not yet in the target (queued ones included)
    backlog_bytes: int  #: their images plus record data (estimated)
    oldest_unsynced_age_s: float | None  #: age of the oldest change not yet in the target
    last_sync_at: float | None  #: wall time of the last sync round that reached the target


class Housekeeper:
    """Retention, retries of queued records, sync when due; ``online`` says whether the last sync reached its target."""

    def __init__(self, evidence: EvidenceStore, cfg: EvidenceConfig, alarms: Alarms, metrics: StationMetrics,
                 also: Callable[[], None] | None = None) -> None:
        self.evidence, self.cfg, self.alarms, self.metrics, self.also = evidence, cfg, alarms, metrics, also
        self.online = False
        self.last_sync_at: float | None = None
        self.target = None  # opened on the first sync round (s3fs is imported only then)
        self._next_sync = 0.0
        # one round at a time: a round asked for while the worker's is in flight waits for it, instead of seeing
        # its sync already scheduled and reporting the status from before it
        self._round = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
        self._status = self._measure()

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
        """One pass: flush queued records, apply retention and quota, sync when due, update metrics. A round asked
        for while another is in flight runs after it."""
        with self._round:
            self._round_locked()

    def _round_locked(self) -> None:
        ev, m = self.evidence, self.metrics
        ev.flush_pending()
        if self.also is not None:
            self.also()
        enforce_limits(ev)
        if ev.key_watch is not None:
            ev.key_watch.check()
        if self.cfg.sync_url and time.monotonic() >= self._next_sync:
            self._next_sync = time.monotonic() + self.cfg.sync_interval_s
            self.sync_now()
        m.online.set(1 if self.online else 0)
        m.buffer_bytes.set(ev.usage_bytes())
        m.unsynced.set(ev.unsynced())
        m.write_failures.set(ev.write_failures)
        m.pending.set(len(ev.pending))
        m.lost.set(ev.pending.lost)
        self._status = self._measure()

    def sync_now(self) -> int:
        """One sync round to the configured target; returns the records synced (0 when offline, alarmed)."""
        try:
            if self.target is None:
                self.target = open_target(self.cfg)
            done = sync_evidence(self.evidence, self.target, on_batch=self._arrived)
        except ConfigError as exc:  # s3fs missing, a secret file unreadable: fixed on the station, tried again
            self.target, self.online = None, False
            self.alarms.raise_("offline", f"evidence sync not possible: {exc}; evidence is kept locally", "warning")
            return 0
        except (ConnectionError, OSError) as exc:
            self.online = False
            self.alarms.raise_("offline", f"{exc}; evidence is kept locally", "warning")
            return 0
        self._arrived(0)
        return done

    def _arrived(self, _marked: int) -> None:
        """A batch reached the target (or the target answered): online, and the page sees the backlog shrink."""
        self.online, self.last_sync_at = True, time.time()
        self.alarms.clear("offline")
        self._status = self._measure()

    def _measure(self) -> SyncStatus:
        n, size, oldest = self.evidence.backlog()
        return SyncStatus(target=display_url(self.cfg.sync_url), online=self.online, backlog_records=n,
                          backlog_bytes=size, oldest_unsynced_age_s=None if oldest is None else
                          round(max(0.0, time.time() - oldest), 1), last_sync_at=self.last_sync_at)

    def status(self) -> SyncStatus:
        """The sync status as of the last round (the page polls this; it costs no query)."""
        return self._status
