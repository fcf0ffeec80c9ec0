"""The evidence buffer: one SQLite (WAL) record per frame, images encrypted at rest (AES-GCM).

Crash safety: an image is written to a temporary file, fsynced and renamed before the
record that names it is committed, so after ``kill -9`` every committed record points to
a complete, authenticated file (stray temporaries are swept at start-up).

Space: records older than ``retention_h`` go; over the quota, the oldest *synced* images
go first, then unsynced PASS images, and unsynced FAIL images only as a last resort, with
an alarm. The records themselves (verdict, score, reasons) are kept until synced.

>>> store = EvidenceStore(EvidenceConfig(dir="/tmp/ev", key_file="/tmp/ev.key"), Alarms(), "st1")  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from serving.alarms import Alarms
from serving.config import EvidenceConfig
from serving.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
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
);
CREATE INDEX IF NOT EXISTS frames_time ON frames(wall_time);
CREATE INDEX IF NOT EXISTS frames_synced ON frames(synced, verdict);
"""


def generate_key(path: str | Path) -> Path:
    """Write a new random 256-bit key (hex) readable only by its owner."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


def load_key(path: str | Path) -> bytes:
    """Read a 32-byte key (64 hex characters); :class:`ConfigError` says how to make one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"evidence.key_file {path}: not found; create one with `lineguard-station gen-key {path}` "
                          "and keep a copy off the station (without it the evidence cannot be read)")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"evidence.key_file {path}: not a hex key; regenerate with `lineguard-station gen-key`") from None
    if len(key) != 32:
        raise ConfigError(f"evidence.key_file {path}: {len(key)} bytes, AES-256-GCM needs 32")
    return key


class EvidenceStore:
    """Per-frame records and encrypted images for one station."""

    def __init__(self, cfg: EvidenceConfig, alarms: Alarms, station_id: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.cfg, self.alarms, self.station_id = cfg, alarms, station_id
        self.dir = Path(cfg.dir)
        self.img_dir = self.dir / "images"
        self.img_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.aead = AESGCM(load_key(cfg.key_file))
            alarms.clear("evidence_key")
        except ConfigError as exc:
            self.aead = None  # inspection goes on; images are not stored in the clear
            alarms.raise_("evidence_key", f"{exc}; images are not being recorded")
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.dir / "evidence.db", check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        for stray in self.img_dir.glob("*.tmp"):
            stray.unlink(missing_ok=True)
        named = {n for row in self.db.execute("SELECT crop_file, overlay_file FROM frames") for n in row if n}
        for orphan in self.img_dir.glob("*.bin"):
            if orphan.name not in named:
                orphan.unlink(missing_ok=True)
        self.db.row_factory = sqlite3.Row
        self.write_errors = 0
        self.dropped_unsynced_fail = 0

    # ------------------------------------------------------------------ crypto
    def _encrypt_to(self, name: str, data: bytes) -> int:
        nonce = secrets.token_bytes(12)
        blob = nonce + self.aead.encrypt(nonce, data, f"{self.station_id}/{name}".encode())
        tmp = self.img_dir / (name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.img_dir / name)
        return len(blob)

    def read_image(self, name: str) -> bytes:
        """Decrypt one stored image (PNG bytes); raises if the file was altered."""
        if self.aead is None:
            raise ConfigError("evidence key missing: cannot decrypt")
        blob = (self.img_dir / name).read_bytes()
        return self.aead.decrypt(blob[:12], blob[12:], f"{self.station_id}/{name}".encode())

    # ------------------------------------------------------------------ write
    def record(self, rec: dict, crop_png: bytes | None = None, overlay_png: bytes | None = None) -> int | None:
        """Store one frame's record (and its images, encrypted); return the record id."""
        files: dict[str, str | None] = {"crop_file": None, "overlay_file": None}
        size = 0
        if self.aead is not None and (crop_png or overlay_png):
            stem = f"{rec['t_trigger_ns']}_{rec['seq']}"
            try:
                for key, data, suffix in (("crop_file", crop_png, "crop"), ("overlay_file", overlay_png, "overlay")):
                    if data:
                        name = f"{stem}_{suffix}.bin"
                        size += self._encrypt_to(name, data)
                        files[key] = name
                self.alarms.clear("evidence_disk")
            except OSError as exc:
                self.write_errors += 1
                what = "disk full" if exc.errno == errno.ENOSPC else str(exc)
                self.alarms.raise_("evidence_disk", f"evidence images not written ({what}); record kept")
                files = {"crop_file": None, "overlay_file": None}
                size = 0
        row = (self.station_id, rec["seq"], rec.get("source"), rec.get("wall_time", time.time()), rec["t_trigger_ns"],
               rec.get("bundle_version"), rec.get("score"), rec.get("area_px"), rec["verdict"], rec["rule"],
               json.dumps(rec.get("reasons", [])), json.dumps(rec.get("latency_ms", {})),
               json.dumps(rec.get("actuation")), files["crop_file"], files["overlay_file"], size)
        try:
            with self._lock:
                cur = self.db.execute(
                    "INSERT INTO frames (station_id, seq, source, wall_time, t_trigger_ns, bundle_version, score, area_px,"
                    " verdict, rule, reasons, latency_ms, actuation, crop_file, overlay_file, image_bytes)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
                return cur.lastrowid
        except sqlite3.OperationalError as exc:
            self.write_errors += 1
            self.alarms.raise_("evidence_db", f"evidence record for part {rec['seq']} not written: {exc}")
            return None

    def set_disposition(self, rid: int, disposition: str, class_name: str | None, user: str) -> bool:
        """Store an operator's review decision on record ``rid``."""
        with self._lock:
            cur = self.db.execute(
                "UPDATE frames SET disposition=?, disposition_class=?, disposition_user=?, disposition_time=?, synced=0"
                " WHERE id=?", (disposition, class_name, user, time.time(), rid))
        return cur.rowcount == 1

    # ------------------------------------------------------------------ read
    def get(self, rid: int) -> dict | None:
        """One record as a dict."""
        with self._lock:
            row = self.db.execute("SELECT * FROM frames WHERE id=?", (rid,)).fetchone()
        return _row(row) if row else None

    def query(self, sql_where: str = "1=1", args: tuple = (), limit: int = 100, order: str = "id DESC") -> list[dict]:
        """Records matching a WHERE clause (internal callers only)."""
        with self._lock:
            rows = self.db.execute(f"SELECT * FROM frames WHERE {sql_where} ORDER BY {order} LIMIT ?", (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Records by verdict."""
        with self._lock:
            rows = self.db.execute("SELECT verdict, COUNT(*) FROM frames GROUP BY verdict").fetchall()
        return {v: n for v, n in rows}

    def usage_bytes(self) -> int:
        """Bytes of stored images plus the database."""
        with self._lock:
            img = self.db.execute("SELECT COALESCE(SUM(image_bytes),0) FROM frames").fetchone()[0]
        db = sum(p.stat().st_size for p in self.dir.glob("evidence.db*") if p.exists())
        return int(img) + db

    def reviewed(self) -> int:
        """Records with an operator disposition."""
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM frames WHERE disposition IS NOT NULL").fetchone()[0]

    def unsynced(self) -> int:
        """Records not yet synced."""
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM frames WHERE synced=0").fetchone()[0]

    # ------------------------------------------------------------------ space
    def _drop_images(self, rows) -> None:
        # commit the record change first: a kill -9 in between leaves an orphan file, never a dangling name
        self.db.executemany("UPDATE frames SET crop_file=NULL, overlay_file=NULL, image_bytes=0, images_dropped=1"
                            " WHERE id=?", [(r["id"],) for r in rows])
        for r in rows:
            for f in (r["crop_file"], r["overlay_file"]):
                if f:
                    (self.img_dir / f).unlink(missing_ok=True)

    def enforce_limits(self, now: float | None = None) -> dict[str, int]:
        """Apply retention and quota; return what was removed."""
        now = now or time.time()
        out = {"expired": 0, "synced_images": 0, "unsynced_pass_images": 0, "unsynced_fail_images": 0}
        cutoff = now - self.cfg.retention_h * 3600
        quota = int(self.cfg.quota_mb * 1024 * 1024)
        with self._lock:
            old = self.db.execute("SELECT * FROM frames WHERE wall_time < ? AND synced=1", (cutoff,)).fetchall()
            self._drop_images(old)
            self.db.execute("DELETE FROM frames WHERE wall_time < ? AND synced=1", (cutoff,))
            out["expired"] = len(old)
            for key, where in (("synced_images", "synced=1"), ("unsynced_pass_images", "synced=0 AND verdict='PASS'"),
                               ("unsynced_fail_images", "synced=0 AND verdict!='PASS'")):
                while True:
                    used = self.db.execute("SELECT COALESCE(SUM(image_bytes),0) FROM frames").fetchone()[0]
                    if used <= quota:
                        break
                    rows = self.db.execute(f"SELECT * FROM frames WHERE {where} AND image_bytes>0 ORDER BY wall_time LIMIT 20").fetchall()
                    if not rows:
                        break
                    self._drop_images(rows)
                    out[key] += len(rows)
        if out["unsynced_fail_images"]:
            self.dropped_unsynced_fail += out["unsynced_fail_images"]
            self.alarms.raise_("evidence_fail_dropped", f"quota full: images of {self.dropped_unsynced_fail} unsynced FAIL "
                                                        "parts dropped (records kept); sync or raise evidence.quota_mb")
        expired_unsynced = self.query("wall_time < ? AND synced=0", (cutoff,), limit=1)
        if expired_unsynced:
            self.alarms.raise_("evidence_unsynced_old", f"evidence older than {self.cfg.retention_h:g} h is not synced; "
                                                        "kept until it is")
        return out

    # ------------------------------------------------------------------ sync
    def sync(self, dest: str | Path | None = None, batch: int = 500, max_seconds: float = 20.0) -> int:
        """Copy unsynced records (JSON lines) and encrypted images to ``dest``; mark them synced.

        ``dest`` is a folder path or ``file://`` URL; when it is not reachable (not mounted,
        network down) nothing changes and the station shows itself offline. Batches repeat
        until the backlog is empty or ``max_seconds`` pass.
        """
        dest = str(dest or self.cfg.sync_url or "")
        if not dest:
            return 0
        root = Path(dest[len("file://"):] if dest.startswith("file://") else dest)
        if not root.is_dir():
            raise ConnectionError(f"evidence sync target {dest} not reachable")
        target = root / self.station_id
        (target / "images").mkdir(parents=True, exist_ok=True)
        done, deadline = 0, time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            rows = self.query("synced=0", limit=batch, order="id")
            if not rows:
                break
            for r in rows:
                for f in (r["crop_file"], r["overlay_file"]):
                    if f and (self.img_dir / f).exists():
                        shutil.copyfile(self.img_dir / f, target / "images" / f)
            with open(target / "records.jsonl", "a") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with self._lock:
                # a disposition made while copying resets synced=0; do not overwrite it
                self.db.executemany("UPDATE frames SET synced=1 WHERE id=? AND disposition_time IS ?",
                                    [(r["id"], r["disposition_time"]) for r in rows])
            done += len(rows)
        return done

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self.db.close()


def _row(row: sqlite3.Row) -> dict:
    d = dict(row)
    for k in ("reasons", "latency_ms", "actuation"):
        if d.get(k):
            d[k] = json.loads(d[k])
    return d
