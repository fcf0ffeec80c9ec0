"""The evidence buffer: one SQLite (WAL) record per part, images encrypted at rest (AES-GCM).

Crash safety: an image is written to a temporary file, fsynced and renamed before the
record that names it is committed, so after ``kill -9`` every committed record points to
a complete, authenticated file (stray temporaries are swept at start-up).

Nothing is dropped silently: a record the database refuses is kept in a queue
(:class:`~serving.evidence.pending.PendingRecords`, mirrored to ``pending.jsonl``), alarmed and
counted (``write_failures``, ``pending``), and written as soon as the database takes it again --
also after a restart.

Records go ahead of images: ``min_free_mb`` of disk is kept free for records (a part's images are not
written below it, and say so), and the alarm says what really happened to the record. One key per
buffer: its fingerprint is kept in the database and another key is refused at start
(:mod:`serving.evidence.keys`).

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
from serving.evidence.crypto import ImageVault, KeyRefused, load_key
from serving.evidence.images import sweep_unnamed, write_part_images
from serving.evidence.keys import KeyFileWatch, check_fingerprint
from serving.evidence.migrations import migrate
from serving.evidence.pending import PendingRecords
from serving.evidence.reads import DB_FILE, EvidenceReads
from serving.evidence.record import IMAGE_FIELDS, ActuationOutcome, InspectionRecord, columns, to_row
from serving.evidence.space import Space


class EvidenceStore(EvidenceReads):
    """Per-part records and encrypted images for one station."""

    def __init__(self, cfg: EvidenceConfig, alarms: Alarms, station_id: str) -> None:
        self.cfg, self.alarms, self.station_id = cfg, alarms, station_id
        self.dir = Path(cfg.dir)
        self.img_dir = self.dir / "images"
        self.img_dir.mkdir(parents=True, exist_ok=True)
        self.space = Space(self.dir, cfg.min_free_mb)
        key, key_problem = None, None
        try:
            key = load_key(cfg.key_file)  # KeyRefused (readable by others) stops the start
        except KeyRefused:
            raise
        except ConfigError as exc:
            key_problem = exc
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.dir / DB_FILE, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.migrated = migrate(self.db, backup_to=self.dir / DB_FILE)
        self.db.row_factory = sqlite3.Row
        self.vault: ImageVault | None = None
        self.key_watch: KeyFileWatch | None = None
        if key is None:  # inspection goes on; images are not stored in the clear
            alarms.raise_("evidence_key", f"{key_problem}; images are not being recorded")
        else:
            self.vault = ImageVault(key, station_id, self.img_dir)
            try:
                check_fingerprint(self.db, self.vault, cfg.key_file, str(self.dir), self._newest_images())
            except KeyRefused:
                self.db.close()
                raise
            self.key_watch = KeyFileWatch(cfg.key_file, self.vault.fingerprint, alarms)
            alarms.clear("evidence_key")
        self._columns = list(columns())
        self._insert = (f"INSERT INTO frames ({', '.join(self._columns)}) "
                        f"VALUES ({', '.join(':' + c for c in self._columns)})")
        self.pending = PendingRecords(self.dir, cfg.max_pending)
        self.write_failures = 0
        self.dropped_unsynced_fail = 0
        self.on_reserve = False  # the reserve file was given up for records (cleared when it is held again)
        self._sweep_files()
        self.space.hold_reserve()
        self.flush_pending()

    # ------------------------------------------------------------------ start-up
    def _newest_images(self) -> list[str]:
        rows = self.db.execute(f"SELECT {', '.join(IMAGE_FIELDS)} FROM frames WHERE image_bytes>0 "
                               "ORDER BY id DESC LIMIT 3").fetchall()
        return [n for row in rows for n in row if n]

    def _sweep_files(self) -> None:
        named = {n for row in self.db.execute(f"SELECT {', '.join(IMAGE_FIELDS)} FROM frames") for n in row if n}
        sweep_unnamed(self.img_dir, named | self.pending.image_names())

    # ------------------------------------------------------------------ write
    def record(self, rec: InspectionRecord, crop_png: bytes | None = None, overlay_png: bytes | None = None,
               explain_jpg: bytes | None = None) -> int | None:
        """Store one part's record (and its images, encrypted); return its row id, or None while it is queued."""
        image_problem = None
        if self.vault is not None:
            rec, image_problem = write_part_images(self.vault, self.space, rec, {
                "crop_file": crop_png, "overlay_file": overlay_png, "explain_file": explain_jpg})
        rid = None
        if self.pending:
            self.flush_pending()
        if not self.pending:
            try:
                rid = self._insert_row(rec)
            except sqlite3.Error as exc:
                self._queue(rec, exc)
        else:
            self._queue(rec, None)
        if image_problem is None:
            if rec.image_bytes:
                self.alarms.clear("evidence_disk")
        elif rid is not None:
            self.alarms.raise_("evidence_disk", f"images of part {rec.seq} not written ({image_problem}); its record "
                                                "is stored without them")
        else:
            self.alarms.raise_("evidence_disk", f"images of part {rec.seq} not written ({image_problem}), and its "
                                                f"record is not in the database either: {self.pending.describe()}")
        return rid

    def _insert_row(self, rec: InspectionRecord) -> int:
        try:
            return self._insert_now(rec)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
        # the disk is full: first the WAL gives its pages back, then the reserve file goes; until the housekeeper
        # holds a reserve again each record is checkpointed, so it costs its few bytes in the database, not the
        # ~20 KB of pages a WAL frame set takes
        with self._lock, contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with contextlib.suppress(sqlite3.OperationalError):
            return self._insert_now(rec)
        if not self.space.release_reserve():
            raise sqlite3.OperationalError("database or disk is full (no reserve left: free disk space)")
        self.on_reserve = True
        self.alarms.raise_("evidence_reserve_used", "evidence disk full: the reserved space (evidence.min_free_mb) is "
                                                    "now used for records; free disk space")
        return self._insert_now(rec)

    def _insert_now(self, rec: InspectionRecord) -> int:
        with self._lock:
            rid = self.db.execute(self._insert, to_row(rec)).lastrowid
            if self.on_reserve:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return rid

    def _queue(self, rec: InspectionRecord, exc: Exception | None) -> None:
        if exc is not None:
            self.write_failures += 1
        self.pending.add(rec)
        self.alarms.raise_("evidence_db", f"evidence database not writable ({exc or 'earlier records queued'}); "
                                          f"{self.pending.describe()}")

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

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self.db.close()
