"""Evidence sync: unsynced records and their encrypted images, uploaded to the target when it is reachable.

Layout under the target (``<station>`` is the station id)::

    <station>/images/<file>                      encrypted image, under its unique file name (never rewritten)
    <station>/records/<boot_id>/<seq>.json       the record, JSON (rewritten whole when it changes)
    <station>/manifests/<batch>.json             what one batch uploaded: each key with its sha256 and size

Every key is idempotent: a record's key is the part's identity (boot, sequence number), an image's its
file name, a manifest's the hash of what it lists. A batch uploads the images, then the records, then its
manifest, and only then marks its records synced -- so a retried or interrupted batch (kill -9, a cut
link) writes the same keys again: nothing is duplicated and nothing is lost. A record that changes while
its batch is in flight (an operator's disposition, a pulse's outcome, images dropped by the quota) stays
unsynced and goes again with the change. When the target cannot be reached nothing changes locally: the
housekeeper shows the station offline and the backlog grows until the target is back.

>>> sync_evidence(store, open_target(store.cfg))   # doctest: +SKIP
42
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.evidence.record import IMAGE_FIELDS, InspectionRecord
from serving.evidence.store import EvidenceStore
from serving.evidence.target import FolderTarget, S3Target, open_target

#: the row fields whose change since the batch was read means the record must go again
_WATCHED = ("disposition_time", "actuation", *IMAGE_FIELDS)


def record_key(station_id: str, rec: InspectionRecord) -> str:
    """The record's object key: its part identity, so a re-upload replaces it (one object per part)."""
    if rec.boot_id:
        return f"{station_id}/records/{rec.boot_id}/{rec.seq:010d}.json"
    return f"{station_id}/records/no-boot/row-{rec.id:010d}.json"  # records from before boot ids: by row id


def image_key(station_id: str, name: str) -> str:
    """An image's object key: its unique file name (the name is bound into its encryption)."""
    return f"{station_id}/images/{name}"


@dataclass
class Batch:
    """One batch: the objects to upload and the row states to mark synced once they are all there."""

    images: dict[str, bytes]
    records: dict[str, bytes]
    rows: list[tuple]  # (id, *_WATCHED values as read)

    def manifest(self, station_id: str) -> tuple[str, bytes]:
        """(key, bytes) of the batch manifest; its key is the hash of what it lists, so a retry rewrites it."""
        def entries(objs):
            return [{"key": k, "sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)} for k, v in sorted(objs.items())]

        listed = {"images": entries(self.images), "records": entries(self.records)}
        batch = hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()[:32]
        body = {"batch": batch, "station_id": station_id, "written_at": time.time(), **listed}
        return f"{station_id}/manifests/{batch}.json", json.dumps(body, indent=1).encode()


def read_batch(store: EvidenceStore, limit: int, max_bytes: int = 4 << 20) -> Batch | None:
    """The oldest unsynced records (up to ``limit``, and images up to about ``max_bytes``) with their images
    read from disk; None when none is left."""
    with store.locked() as db:
        rows = db.execute("SELECT * FROM frames WHERE synced=0 ORDER BY id LIMIT ?", (limit,)).fetchall()
    if not rows:
        return None
    sid = store.station_id
    batch, size = Batch({}, {}, []), 0
    for row in rows:
        if batch.rows and size >= max_bytes:
            break  # an edge box holds one batch in memory: the rest goes in the next one
        rec = InspectionRecord.from_row(row)
        for name in (getattr(rec, f) for f in IMAGE_FIELDS):
            if not name:
                continue
            try:
                data = (store.img_dir / name).read_bytes()
                batch.images[image_key(sid, name)] = data
                size += len(data)
            except FileNotFoundError:
                pass  # dropped by the quota since the row was read: the row changed, so it goes again
        batch.records[record_key(sid, rec)] = rec.model_dump_json().encode()
        batch.rows.append((row["id"], *(row[c] for c in _WATCHED)))
    return batch


def mark_synced(store: EvidenceStore, rows: list[tuple]) -> int:
    """Mark rows synced unless they changed since they were read (those go again); return how many were marked."""
    where = " AND ".join(f"{c} IS ?" for c in _WATCHED)
    with store.locked() as db:
        db.execute("BEGIN")
        try:
            n = sum(db.execute(f"UPDATE frames SET synced=1 WHERE id=? AND synced=0 AND {where}", r).rowcount
                    for r in rows)
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
    return n


def sync_evidence(store: EvidenceStore, target: FolderTarget | S3Target | str | Path | None = None,
                  batch: int | None = None, max_seconds: float = 20.0,
                  on_batch: Callable[[int], None] | None = None) -> int:
    """Upload unsynced records and their images to ``target`` (an opened target or a URL; default: the config's
    ``sync_url``, with its endpoint and credentials); ``on_batch(marked)`` after each batch that arrived.

    Returns how many records were marked synced; raises :class:`~serving.evidence.target.SyncOffline`
    (a ``ConnectionError``) when the target cannot be reached -- then nothing more is marked."""
    if target is None:
        if not store.cfg.sync_url:
            return 0
        target = open_target(store.cfg)
    elif isinstance(target, (str, Path)):
        target = open_target(store.cfg.model_copy(update={"sync_url": str(target)}))
    limit = batch or store.cfg.sync_batch
    done, deadline = 0, time.monotonic() + max_seconds
    first = True
    while time.monotonic() < deadline:
        b = read_batch(store, limit)
        if b is None:
            if first:
                target.check()  # nothing to send: still find out whether the target is there
            break
        first = False
        target.put_many(b.images)
        target.put_many(b.records)
        target.put_many(dict([b.manifest(store.station_id)]))
        marked = mark_synced(store, b.rows)
        done += marked
        if on_batch is not None:
            on_batch(marked)
        if marked == 0:
            break  # every row changed under us (a burst of dispositions): the next round takes them
    return done
