"""Append-only audit log of dispositions and config changes: hash-chained, keyed, with its head kept apart.

Each JSON line carries its index ``i``, the sha256 of the line before it (``prev``) and an HMAC-SHA256
(``mac``) of everything else under a key kept apart from the log (``audit.key``, created 0600 on the
first start). The head, the entry count and the last MAC sealed with the same key, lives in another
file (``audit.head``). So an edited entry (even with the plain sha256 chain recomputed), a removed or
inserted one, a truncated log and a deleted head are all found by :meth:`AuditLog.verify`, which the
station runs at start, refusing a tampered log with :class:`AuditTampered` (see SECURITY.md), and on
every read of ``/api/audit``.

>>> import tempfile, pathlib
>>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
>>> _ = log.append("alice", "disposition", {"id": 3, "disposition": "defect"})
>>> log.verify().ok, log.verify().entries
(True, 1)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from pathlib import Path

from serving.errors import LineguardError
from serving.station.audit_chain import (
    GENESIS,
    ChainCheck,
    check_chain,
    line_hash,
    mac_of,
    plain_chain_break,
    seal,
)


class AuditTampered(LineguardError):
    """The audit log, its head or its key does not verify: someone changed them outside the station."""


def _finite(value):
    """``value`` with NaN and infinities as strings: JSON has no such numbers, and ``null`` would hide them."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename), readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_key(path: Path) -> bytes:
    """The audit key in ``path`` (64 hex characters); refused when others may read it or it is malformed."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuditTampered(f"api.audit_key {path}: readable by others (mode {mode:o}); whoever reads it can rewrite "
                            f"the audit log unnoticed. Run `chmod 600 {path}` and start again")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise AuditTampered(f"api.audit_key {path}: not a 32-byte hex key; restore it from its backup (a new key "
                            "cannot verify the existing log)")
    return key


class AuditLog:
    """An append-only JSON-lines file, keyed by ``key_file`` and anchored by ``head_file`` (both beside the log
    unless given; on a line, keep them where the log's readers cannot write)."""

    def __init__(self, path: str | Path, key_file: str | Path | None = None, head_file: str | Path | None = None) -> None:
        self.path = Path(path)
        self.key_file = Path(key_file) if key_file else self.path.with_name("audit.key")
        self.head_file = Path(head_file) if head_file else self.path.with_name("audit.head")
        for p in (self.path, self.key_file, self.head_file):
            p.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._count, self._last, self._mac = 0, GENESIS, None
        if self.key_file.exists():
            self._key = read_key(self.key_file)
            self._open_existing()
        else:
            self._key = b""
            self._first_start()

    # ------------------------------------------------------------------ start
    def _recover_help(self) -> str:
        return (f"keep {self.path}, {self.head_file} and {self.key_file} for investigation; to run on, move all three "
                "aside (the station then starts a new, empty log) or restore them from a backup")

    def _first_start(self) -> None:
        if self.head_file.exists():
            raise AuditTampered(f"audit key {self.key_file} is missing, but the log's head {self.head_file} exists: the "
                                f"log cannot be verified without its key. Restore the key from its backup, or "
                                f"{self._recover_help()}")
        lines = self._lines()
        broken = plain_chain_break(lines)
        if broken is not None:
            raise AuditTampered(f"audit log {self.path}: entry {broken} does not follow from the one before it (edited, "
                                f"removed or inserted); {self._recover_help()}")
        self._key = secrets.token_bytes(32)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self._key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._count, self._last = len(lines), line_hash(lines[-1]) if lines else GENESIS
        self._write_head()
        if lines:  # entries written before the log was keyed: the first keyed entry seals them (its MAC covers prev)
            self.append("station", "audit_keyed", {"unkeyed_entries": len(lines)})

    def _open_existing(self) -> None:
        self._drop_torn_tail()
        check, state = check_chain(self._lines(), self._read_head(), self._key, self.head_file)
        if not check.ok:
            raise AuditTampered(f"audit log {self.path} does not verify: {check.problem}. The station does not start "
                                f"on a tampered log; {self._recover_help()}")
        self._count, self._last, self._mac = state
        self._write_head()  # a head one entry behind (a crash between the two writes) catches up
        if self._torn is not None:
            self.append("station", "audit_torn_entry_set_aside", {"file": str(self._torn)})

    def _drop_torn_tail(self) -> None:
        """A power cut in the middle of an append leaves half a line that was never acknowledged: set it aside."""
        self._torn: Path | None = None
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if not raw or raw.endswith(b"\n"):
            return
        cut = raw.rfind(b"\n") + 1
        aside = self.path.with_name(f"{self.path.name}.torn-{int(time.time())}")
        aside.write_bytes(raw[cut:])
        with open(self.path, "r+b") as fh:
            fh.truncate(cut)
            os.fsync(fh.fileno())
        self._torn = aside

    # ------------------------------------------------------------------ keyed chain
    def _write_head(self) -> None:
        head = {"entries": self._count, "mac": self._mac, "seal": seal(self._key, self._count, self._mac)}
        _write_private(self.head_file, json.dumps(head) + "\n")

    def _read_head(self) -> dict | None:
        try:
            return json.loads(self.head_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _lines(self) -> list[str]:
        return [line for line in self.path.read_text().splitlines() if line] if self.path.exists() else []

    # ------------------------------------------------------------------ use
    def mac(self, data: bytes) -> str:
        """HMAC-SHA256 of ``data`` under the audit key (other station files sealed by the same key use it)."""
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def append(self, user: str, action: str, details: dict) -> dict:
        """Write one entry (fsynced, then the head) and return it."""
        with self._lock:
            entry = {"i": self._count, "time": time.time(), "user": user, "action": action,
                     "details": _finite(details), "prev": self._last}
            entry["mac"] = mac_of(self._key, entry)
            line = json.dumps(entry, sort_keys=True, allow_nan=False)
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._count, self._last, self._mac = self._count + 1, line_hash(line), entry["mac"]
            self._write_head()
            return entry

    def entries(self) -> list[dict]:
        """All entries, oldest first."""
        return [json.loads(line) for line in self._lines()]

    def verify(self) -> ChainCheck:
        """Check the log on disk against its key and head, and against what this process wrote."""
        with self._lock:
            check, (count, _, _) = check_chain(self._lines(), self._read_head(), self._key, self.head_file)
            if check.ok and count < self._count:
                return ChainCheck(False, count, f"it has {count} entries but this station wrote {self._count}: "
                                                "entries were removed from its end")
            return check


