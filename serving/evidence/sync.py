"""Evidence sync: unsynced records (JSON lines) and their encrypted images, copied to a target when reachable.

The target is a folder path or ``file://`` URL (an S3 bucket works where it is mounted).
When it is not reachable nothing changes and the station shows itself offline; a record
disposed of while a batch is copied stays unsynced, so its new disposition goes next time.

>>> sync_evidence(store, "file:///mnt/evidence")   # doctest: +SKIP
42
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from serving.evidence.store import EvidenceStore


def sync_evidence(store: EvidenceStore, dest: str | Path | None = None, batch: int = 500, max_seconds: float = 20.0) -> int:
    """Copy unsynced records and images to ``dest`` (default: the config's ``sync_url``); return how many went."""
    dest = str(dest or store.cfg.sync_url or "")
    if not dest:
        return 0
    root = Path(dest[len("file://"):] if dest.startswith("file://") else dest)
    if not root.is_dir() and root.parent.is_dir():
        root.mkdir()  # a first sync into a folder that is not there yet; a missing mount (no parent) stays offline
    if not root.is_dir():
        raise ConnectionError(f"evidence sync target {dest} not reachable (is it mounted?)")
    target = root / store.station_id
    (target / "images").mkdir(parents=True, exist_ok=True)
    done, deadline = 0, time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        rows = store.query("synced=0", limit=batch, order="id")
        if not rows:
            break
        for r in rows:
            for f in (r.crop_file, r.overlay_file):
                if f and (store.img_dir / f).exists():
                    shutil.copyfile(store.img_dir / f, target / "images" / f)
        with open(target / "records.jsonl", "a") as fh:
            for r in rows:
                fh.write(r.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with store.locked() as db:
            # a disposition made while copying resets synced=0; do not overwrite it
            db.executemany("UPDATE frames SET synced=1 WHERE id=? AND disposition_time IS ?",
                           [(r.id, r.disposition_time) for r in rows])
        done += len(rows)
    return done
