"""Reading the evidence buffer: records, their images, the sync backlog and the next sequence number.

Part of :class:`serving.evidence.store.EvidenceStore` (a base class: it uses the store's database, lock, queue
and vault); the store itself opens the buffer and writes to it.
"""

from __future__ import annotations

import contextlib

from serving.errors import ConfigError
from serving.evidence.meta import SEQ_FLOOR, get_meta
from serving.evidence.record import InspectionRecord

DB_FILE = "evidence.db"
RECORD_BYTES = 700  #: a record's JSON less its variable-length fields (reasons, latencies, boxes, fingerprint)


class EvidenceReads:
    """The store's read side (queries run under the store's lock)."""

    def next_seq(self) -> int:
        """The first sequence number for a new run: above every number this buffer has issued, also those of
        records retention has deleted and of records still queued (one number never names two parts)."""
        with self._lock:
            high = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM frames").fetchone()[0]
            floor = get_meta(self.db, SEQ_FLOOR)
        queued = max((r.seq for r in self.pending.items), default=0)
        return max(int(high), int(floor or 0), queued) + 1

    def backlog(self) -> tuple[int, int, float | None]:
        """(records not yet synced, their bytes -- images plus the record data, estimated --, the wall time of the
        oldest unsynced change or None). Records still queued for the database count too."""
        with self._lock:
            n, img, data, oldest = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(image_bytes), 0), COALESCE(SUM(LENGTH(reasons) + LENGTH(latency_ms) + "
                "LENGTH(detections) + COALESCE(LENGTH(embedding), 0) + COALESCE(LENGTH(actuation), 0)), 0), "
                "MIN(MAX(wall_time, COALESCE(disposition_time, 0))) FROM frames WHERE synced=0").fetchone()
        queued = list(self.pending.items)
        times = [t for t in (oldest, *(r.wall_time for r in queued)) if t is not None]
        n_all = n + len(queued)
        return n_all, int(img) + int(data) + RECORD_BYTES * n_all + sum(r.image_bytes for r in queued), \
            (min(times) if times else None)

    def read_image(self, name: str) -> bytes:
        """Decrypt one stored image (PNG bytes); :class:`~serving.evidence.crypto.ImageUnreadable` if it is gone,
        altered or written under another key."""
        if self.vault is None:
            raise ConfigError("evidence key missing: cannot decrypt")
        return self.vault.read(name)

    def get(self, rid: int) -> InspectionRecord | None:
        """One record by row id."""
        rows = self.query("id=?", (rid,), limit=1)
        return rows[0] if rows else None

    def query(self, where: str = "1=1", args: tuple = (), limit: int = 100, order: str = "id DESC") -> list[InspectionRecord]:
        """Records matching a WHERE clause (internal callers only: the clause is not user input)."""
        with self._lock:
            rows = self.db.execute(f"SELECT * FROM frames WHERE {where} ORDER BY {order} LIMIT ?", (*args, limit)).fetchall()
        return [InspectionRecord.from_row(r) for r in rows]

    @contextlib.contextmanager
    def locked(self):
        """The database connection, held exclusively (for this room's retention and sync workers)."""
        with self._lock:
            yield self.db

    def scalar(self, sql: str, args: tuple = ()):
        """The first column of the first row of ``sql``."""
        with self._lock:
            return self.db.execute(sql, args).fetchone()[0]

    def usage_bytes(self) -> int:
        """Bytes of stored images plus the database."""
        img = self.scalar("SELECT COALESCE(SUM(image_bytes),0) FROM frames")
        return int(img) + sum(p.stat().st_size for p in self.dir.glob(DB_FILE + "*") if p.exists())

    def reviewed(self) -> int:
        """Records with an operator disposition."""
        return self.scalar("SELECT COUNT(*) FROM frames WHERE disposition IS NOT NULL")

    def unsynced(self) -> int:
        """Records not yet synced."""
        return self.scalar("SELECT COUNT(*) FROM frames WHERE synced=0")

