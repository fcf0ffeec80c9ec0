"""Station facts kept beside the records in the evidence database (table ``station_meta``, migration 5).

>>> import sqlite3; from serving.evidence.migrations import migrate
>>> db = sqlite3.connect(":memory:", isolation_level=None); _ = migrate(db)
>>> set_meta(db, "key_fingerprint", "ab12"); get_meta(db, "key_fingerprint")
'ab12'
>>> raise_seq_floor(db, 41); raise_seq_floor(db, 7); get_meta(db, SEQ_FLOOR)
'41'
"""

from __future__ import annotations

import sqlite3

KEY_FINGERPRINT = "key_fingerprint"  #: the evidence key the stored images were written with
SEQ_FLOOR = "seq_floor"  #: the highest sequence number of a record that retention has deleted


def get_meta(db: sqlite3.Connection, name: str) -> str | None:
    """The value of ``name``, or None."""
    row = db.execute("SELECT value FROM station_meta WHERE name=?", (name,)).fetchone()
    return None if row is None else row[0]


def set_meta(db: sqlite3.Connection, name: str, value: str) -> None:
    """Store ``name`` = ``value`` (replacing any earlier value)."""
    db.execute("INSERT INTO station_meta (name, value) VALUES (?, ?) "
               "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (name, value))


def raise_seq_floor(db: sqlite3.Connection, seq: int | None) -> None:
    """Remember ``seq`` as issued (records about to be deleted), so a later start never issues it again."""
    if seq is None:
        return
    current = get_meta(db, SEQ_FLOOR)
    if current is None or int(current) < int(seq):
        set_meta(db, SEQ_FLOOR, str(int(seq)))
