"""Retention and quota for the evidence buffer (run by the station's housekeeping worker).

Records older than ``retention_h`` go once synced; over the quota the oldest *synced* images
go first, then unsynced PASS images, and unsynced FAIL images only as a last resort, with an
alarm. The records themselves (verdict, score, reasons) are kept until synced.

>>> enforce_limits(store)   # doctest: +SKIP
{'expired': 0, 'synced_images': 0, 'unsynced_pass_images': 0, 'unsynced_fail_images': 0}
"""

from __future__ import annotations

import time

from serving.evidence.store import EvidenceStore


def _drop_images(store: EvidenceStore, db, rows) -> None:
    # commit the record change first: a kill -9 in between leaves an orphan file, never a dangling name
    db.executemany("UPDATE frames SET crop_file=NULL, overlay_file=NULL, image_bytes=0, images_dropped=1 WHERE id=?",
                   [(r["id"],) for r in rows])
    for r in rows:
        for f in (r["crop_file"], r["overlay_file"]):
            if f:
                (store.img_dir / f).unlink(missing_ok=True)


def enforce_limits(store: EvidenceStore, now: float | None = None) -> dict[str, int]:
    """Apply retention and quota to ``store``; return what was removed."""
    cfg = store.cfg
    now = now or time.time()
    out = {"expired": 0, "synced_images": 0, "unsynced_pass_images": 0, "unsynced_fail_images": 0}
    cutoff = now - cfg.retention_h * 3600
    quota = int(cfg.quota_mb * 1024 * 1024)
    with store.locked() as db:
        old = db.execute("SELECT * FROM frames WHERE wall_time < ? AND synced=1", (cutoff,)).fetchall()
        _drop_images(store, db, old)
        db.execute("DELETE FROM frames WHERE wall_time < ? AND synced=1", (cutoff,))
        out["expired"] = len(old)
        for key, where in (("synced_images", "synced=1"), ("unsynced_pass_images", "synced=0 AND verdict='PASS'"),
                           ("unsynced_fail_images", "synced=0 AND verdict!='PASS'")):
            while db.execute("SELECT COALESCE(SUM(image_bytes),0) FROM frames").fetchone()[0] > quota:
                rows = db.execute(f"SELECT * FROM frames WHERE {where} AND image_bytes>0 ORDER BY wall_time LIMIT 20").fetchall()
                if not rows:
                    break
                _drop_images(store, db, rows)
                out[key] += len(rows)
        expired_unsynced = db.execute("SELECT 1 FROM frames WHERE wall_time < ? AND synced=0 LIMIT 1", (cutoff,)).fetchone()
    if out["unsynced_fail_images"]:
        store.dropped_unsynced_fail += out["unsynced_fail_images"]
        store.alarms.raise_("evidence_fail_dropped", f"quota full: images of {store.dropped_unsynced_fail} unsynced FAIL "
                                                     "parts dropped (records kept); sync or raise evidence.quota_mb")
    if expired_unsynced:
        store.alarms.raise_("evidence_unsynced_old", f"evidence older than {cfg.retention_h:g} h is not synced; "
                                                     "kept until it is", "warning")
    else:
        store.alarms.clear("evidence_unsynced_old")
    return out
