"""Retention and quota for the evidence buffer (run by the station's housekeeping worker).

Records older than ``retention_h`` go once synced; over the quota the oldest *synced* images
go first, then unsynced PASS images, and unsynced FAIL images only as a last resort, with an
alarm. The records themselves (verdict, score, reasons) are kept until synced.

The quota is held against the disk as it is: the image budget is the quota or, when less, what keeps
twice ``min_free_mb`` free on the disk (:class:`~serving.evidence.space.Space`), so images make way for
records. When even the reserve is not free with every image gone, the oldest *synced* records go (they
are in the sync target), never an unsynced one. A deleted record's sequence number is remembered, so a
restart never issues it again.

>>> enforce_limits(store)   # doctest: +SKIP
{'expired': 0, 'synced_images': 0, 'unsynced_pass_images': 0, 'unsynced_fail_images': 0, 'synced_records': 0}
"""

from __future__ import annotations

import time

from serving.evidence.meta import raise_seq_floor
from serving.evidence.record import IMAGE_FIELDS
from serving.evidence.space import MB
from serving.evidence.store import EvidenceStore


def _drop_images(store: EvidenceStore, db, rows) -> None:
    # commit the record change first: a kill -9 in between leaves an orphan file, never a dangling name
    nulls = ", ".join(f"{f}=NULL" for f in IMAGE_FIELDS)
    db.executemany(f"UPDATE frames SET {nulls}, image_bytes=0, images_dropped=1 WHERE id=?", [(r["id"],) for r in rows])
    for r in rows:
        for f in (r[name] for name in IMAGE_FIELDS):
            if f:
                (store.img_dir / f).unlink(missing_ok=True)


def _make_room_for_records(store: EvidenceStore, db, batch: int = 500) -> int:
    """With the disk under the reserve and no image left to drop, delete the oldest synced records until the
    database has the reserve again (free pages inside it count: SQLite reuses them before it grows)."""
    page = db.execute("PRAGMA page_size").fetchone()[0]
    deleted = 0
    while store.space.free_bytes() + db.execute("PRAGMA freelist_count").fetchone()[0] * page < store.space.reserve:
        rows = db.execute("SELECT * FROM frames WHERE synced=1 ORDER BY id LIMIT ?", (batch,)).fetchall()
        if not rows:
            break
        _drop_images(store, db, rows)
        raise_seq_floor(db, max(r["seq"] for r in rows))
        db.executemany("DELETE FROM frames WHERE id=?", [(r["id"],) for r in rows])
        deleted += len(rows)
    return deleted


def enforce_limits(store: EvidenceStore, now: float | None = None) -> dict[str, int]:
    """Apply retention and quota to ``store``; return what was removed."""
    cfg = store.cfg
    now = now or time.time()
    out = {"expired": 0, "synced_images": 0, "unsynced_pass_images": 0, "unsynced_fail_images": 0, "synced_records": 0}
    cutoff = now - cfg.retention_h * 3600
    quota = int(cfg.quota_mb * MB)
    space = store.space
    with store.locked() as db:
        old = db.execute("SELECT * FROM frames WHERE wall_time < ? AND synced=1", (cutoff,)).fetchall()
        _drop_images(store, db, old)
        raise_seq_floor(db, max((r["seq"] for r in old), default=None))
        db.execute("DELETE FROM frames WHERE wall_time < ? AND synced=1", (cutoff,))
        out["expired"] = len(old)
        budget = space.image_budget(db.execute("SELECT COALESCE(SUM(image_bytes),0) FROM frames").fetchone()[0], quota)
        for key, where in (("synced_images", "synced=1"), ("unsynced_pass_images", "synced=0 AND verdict='PASS'"),
                           ("unsynced_fail_images", "synced=0 AND verdict!='PASS'")):
            while db.execute("SELECT COALESCE(SUM(image_bytes),0) FROM frames").fetchone()[0] > budget:
                rows = db.execute(f"SELECT * FROM frames WHERE {where} AND image_bytes>0 ORDER BY wall_time LIMIT 20").fetchall()
                if not rows:
                    break
                _drop_images(store, db, rows)
                out[key] += len(rows)
        if space.free_bytes() < 4 * space.reserve:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # running low: the WAL gives its pages back to the disk
        out["synced_records"] = _make_room_for_records(store, db)
        short = space.short()
        expired_unsynced = db.execute("SELECT 1 FROM frames WHERE wall_time < ? AND synced=0 LIMIT 1", (cutoff,)).fetchone()
    if space.hold_reserve() or not space.reserve_file.exists() and not short:
        store.on_reserve = False
        store.alarms.clear("evidence_reserve_used")  # the reserve is back, or the disk no longer needs one
    if out["unsynced_fail_images"]:
        store.dropped_unsynced_fail += out["unsynced_fail_images"]
        why = "quota full" if budget >= quota else "disk nearly full"
        store.alarms.raise_("evidence_fail_dropped", f"{why}: images of {store.dropped_unsynced_fail} unsynced FAIL "
                                                     "parts dropped (records kept); sync, free disk space or raise "
                                                     "evidence.quota_mb")
    if short:
        store.alarms.raise_("evidence_disk_full", f"evidence disk nearly full: {space.free_bytes() / MB:.1f} MB free, "
                                                  f"under evidence.min_free_mb ({cfg.min_free_mb:g} MB): new parts' "
                                                  "images are not written, records still are; free disk space")
    else:
        store.alarms.clear("evidence_disk_full")
    if expired_unsynced:
        store.alarms.raise_("evidence_unsynced_old", f"evidence older than {cfg.retention_h:g} h is not synced; "
                                                     "kept until it is", "warning")
    else:
        store.alarms.clear("evidence_unsynced_old")
    return out
