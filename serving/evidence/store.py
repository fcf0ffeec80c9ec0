"""The evidence buffer: one SQLite (WAL) record per part, images encrypted at rest (AES-GCM).

Crash safety: an image is written to a temporary file, fsynced and renamed before the
record that names it is committed, so after ``kill -9`` every committed record points to
a complete, authenticated file (stray temporaries are swept at start-up).

Nothing is dropped silently: a record the database refuses is kept in a queue
(:class:`~serving.evidence.pending.PendingRecords`, mirrored to ``pending.jsonl``), alarmed and
counted (``write_failures``, ``pending``), and written as soon as the database takes it again --
also after a restart.

>>> store = EvidenceStore(EvidenceConfig(dir="/tmp/ev", key_file="/tmp/ev.key"), Alarms(), "st1")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

from serving.alarms import Alarms
from serving.errors import ConfigError
from serving.evidence.config import EvidenceConfig
from serving.evidence.crypto import ImageVault, load_key
from serving.evidence.migrations import migrate
from serving.evidence.pending import PendingRecords
from serving.evidence.record import ActuationOutcome, InspectionRecord, columns, to_row

DB_FILE = "evidence.db"


class EvidenceStore:
    """Per-part records and encrypted images for one station."""

    def __init__(self, cfg: EvidenceConfig, alarms: Alarms, station_id: str) -> None:
        self.cfg, self.alarms, self.station_id = cfg, alarms, station_id
        self.dir = Path(cfg.dir)
        self.img_dir = self.dir / "images"
        self.img_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.vault: ImageVault | None = ImageVault(load_key(cfg.key_file), station_id, self.img_dir)
            alarms.clear("evidence_key")
        except ConfigError as exc:
            self.vault = None  # inspection goes on; images are not stored in the clear
            alarms.raise_("evidence_key", f"{exc}; images are not being recorded")
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.dir / DB_FILE, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.migrated = migrate(self.db, backup_to=self.dir / DB_FILE)
        self.db.row_factory = sqlite3.Row
        self._columns = list(columns())
        self._insert = (f"INSERT INTO frames ({', '.join(self._columns)}) "
                        f"VALUES ({', '.join(':' + c for c in self._columns)})")
        self.pending = PendingRecords(self.dir, cfg.max_pending)
        self.write_failures = 0
        self.dropped_unsynced_fail = 0
        self._sweep_files()
        self.flush_pending()

    # ------------------------------------------------------------------ start-up
    def _sweep_files(self) -> None:
        for stray in self.img_dir.glob("*.tmp"):
            stray.unlink(missing_ok=True)
        named = {n for row in self.db.execute("SELECT crop_file, overlay_file FROM frames") for n in row if n}
        named |= self.pending.image_names()
        for orphan in self.img_dir.glob("*.bin"):
            if orphan.name not in named:
                orphan.unlink(missing_ok=True)

    # ------------------------------------------------------------------ write
    def _write_images(self, rec: InspectionRecord, crop_png: bytes | None, overlay_png: bytes | None) -> InspectionRecord:
        if self.vault is None or not (crop_png or overlay_png):
            return rec
        stem = f"{rec.t_trigger_ns}_{rec.seq}"
        files, size = {}, 0
        try:
            for field, data, suffix in (("crop_file", crop_png, "crop"), ("overlay_file", overlay_png, "overlay")):
                if data:
                    name = f"{stem}_{suffix}.bin"
                    size += self.vault.write(name, data)
                    files[field] = name
            self.alarms.clear("evidence_disk")
        except OSError as exc:
            self.alarms.raise_("evidence_disk", f"images of part {rec.seq} not written ({exc.strerror or exc}); "
                                                "the record is kept without them")
            return rec.model_copy(update={"images_dropped": True})
        return rec.model_copy(update={**files, "image_bytes": size})

    def record(self, rec: InspectionRecord, crop_png: bytes | None = None, overlay_png: bytes | None = None) -> int | None:
        """Store one part's record (and its images, encrypted); return its row id, or None while it is queued."""
        rec = self._write_images(rec, crop_png, overlay_png)
        if self.pending:
            self.flush_pending()
        if not self.pending:
            try:
                return self._insert_row(rec)
            except sqlite3.Error as exc:
                self._queue(rec, exc)
                return None
        self._queue(rec, None)
        return None

    def _insert_row(self, rec: InspectionRecord) -> int:
        with self._lock:
            return self.db.execute(self._insert, to_row(rec)).lastrowid

    def _queue(self, rec: InspectionRecord, exc: Exception | None) -> None:
        if exc is not None:
            self.write_failures += 1
        self.pending.add(rec)
        lost = f"; {self.pending.lost} records LOST (queue full)" if self.pending.lost else ""
        self.alarms.raise_("evidence_db", f"evidence database not writable ({exc or 'earlier records queued'}); "
                                          f"{len(self.pending)} records queued and retried{lost}")

    def flush_pending(self) -> int:
        """Write queued records (oldest first); return how many went in."""
        done = self.pending.drain(self._insert_row, (sqlite3.Error,))
        if not self.pending and not self.pending.lost:
            self.alarms.clear("evidence_db")
        return done

    def set_disposition(self, rid: int, disposition: str, class_name: str | None, user: str) -> bool:
        """Store an operator's review decision on record ``rid`` (it is synced again)."""
        with self._lock:
            cur = self.db.execute(
                "UPDATE frames SET disposition=?, disposition_class=?, disposition_user=?, disposition_time=?, synced=0"
                " WHERE id=?", (disposition, class_name, user, time.time(), rid))
        return cur.rowcount == 1

    def update_actuation(self, boot_id: str, seq: int, outcome: ActuationOutcome) -> bool:
        """Replace a part's actuation outcome once its pulse has run (it is synced again)."""
        with self._lock:
            cur = self.db.execute("UPDATE frames SET actuation=?, synced=0 WHERE boot_id=? AND seq=?",
                                  (outcome.model_dump_json(), boot_id, seq))
        return cur.rowcount == 1

    # ------------------------------------------------------------------ read
    def read_image(self, name: str) -> bytes:
        """Decrypt one stored image (PNG bytes); raises if the file was altered."""
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

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self.db.close()
