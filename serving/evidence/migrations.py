"""Numbered migrations of the evidence database (``PRAGMA user_version`` holds the number applied).

A database from any earlier station release is migrated in place -- after a backup copy --
and keeps every record; a database from a *newer* release is refused rather than guessed at.
Each migration that adds a record field adds its column here; a test checks that the migrated
table has exactly the columns :func:`serving.evidence.record.columns` derives from the record.

>>> import sqlite3
>>> db = sqlite3.connect(":memory:")
>>> migrate(db)
(0, 6)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from serving.errors import ConfigError

#: (number, what it does, statements). Never edit a released migration; add the next one.
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "frames table as the first station release created it (without a version)", (
        """CREATE TABLE IF NOT EXISTS frames (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          station_id TEXT NOT NULL,
          seq INTEGER NOT NULL,
          source TEXT,
          wall_time REAL NOT NULL,
          t_trigger_ns INTEGER NOT NULL,
          bundle_version TEXT,
          score REAL,
          area_px REAL,
          verdict TEXT NOT NULL,
          rule TEXT NOT NULL,
          reasons TEXT NOT NULL,
          latency_ms TEXT NOT NULL,
          actuation TEXT,
          crop_file TEXT,
          overlay_file TEXT,
          image_bytes INTEGER NOT NULL DEFAULT 0,
          images_dropped INTEGER NOT NULL DEFAULT 0,
          synced INTEGER NOT NULL DEFAULT 0,
          disposition TEXT,
          disposition_class TEXT,
          disposition_user TEXT,
          disposition_time REAL
        )""",
        "CREATE INDEX IF NOT EXISTS frames_time ON frames(wall_time)",
        "CREATE INDEX IF NOT EXISTS frames_synced ON frames(synced, verdict)",
    )),
    (2, "record version, boot id and detector boxes per record", (
        "ALTER TABLE frames ADD COLUMN record_version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE frames ADD COLUMN boot_id TEXT",
        "ALTER TABLE frames ADD COLUMN detections TEXT NOT NULL DEFAULT '[]'",
    )),
    (3, "drift figures per part, the Stability Index, recalibration captures", (
        "ALTER TABLE frames ADD COLUMN embedding TEXT",
        "ALTER TABLE frames ADD COLUMN luminance REAL",
        "ALTER TABLE frames ADD COLUMN color_balance REAL",
        "ALTER TABLE frames ADD COLUMN sharpness REAL",
        "ALTER TABLE frames ADD COLUMN stability_index REAL",
        "ALTER TABLE frames ADD COLUMN capture_id TEXT",
        "CREATE INDEX IF NOT EXISTS frames_capture ON frames(capture_id)",
    )),
    (4, "the defect class of each verdict (detector beside the anomaly model)", (
        "ALTER TABLE frames ADD COLUMN class_name TEXT",
    )),
    (5, "station facts beside the records: the evidence key's fingerprint, the highest sequence number issued", (
        "CREATE TABLE IF NOT EXISTS station_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )),
    (6, "why a FAIL failed: its explanation and the side-by-side picture", (
        "ALTER TABLE frames ADD COLUMN explain TEXT",
        "ALTER TABLE frames ADD COLUMN explain_file TEXT",
    )),
]
LATEST = MIGRATIONS[-1][0]


def schema_version(db: sqlite3.Connection) -> int:
    """The migration number a database is at (0 for a database from before versioning)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def backup(db: sqlite3.Connection, path: Path) -> Path:
    """A consistent copy of the whole database (SQLite's online backup), written before migrating."""
    dst = sqlite3.connect(path)
    try:
        db.backup(dst)
    finally:
        dst.close()
    return path


def migrate(db: sqlite3.Connection, backup_to: Path | None = None) -> tuple[int, int]:
    """Apply every migration newer than the database's version, each in one transaction; return (from, to)."""
    current = schema_version(db)
    if current > LATEST:
        raise ConfigError(f"evidence database is at schema {current}, this station knows up to {LATEST}: it was "
                          "written by a newer Lineguard; upgrade the station (nothing was changed or dropped)")
    has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='frames'").fetchone()
    if current < LATEST and has_table and backup_to is not None:
        backup(db, backup_to.with_name(f"{backup_to.name}.v{current}.bak"))
    for number, _, statements in MIGRATIONS:
        if number <= current:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                db.execute(sql)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
    return current, LATEST


def table_columns(db: sqlite3.Connection) -> dict[str, str]:
    """Column name -> declared type of the frames table."""
    return {row[1]: row[2] for row in db.execute("PRAGMA table_info(frames)")}
