"""Append-only audit log of dispositions and config changes, hash-chained.

Each JSON line carries the sha256 of the line before it, so an edited or deleted
entry breaks the chain and :func:`verify_chain` says where.

>>> log = AuditLog("/tmp/audit-doc.jsonl")                     # doctest: +SKIP
>>> log.append("alice", "disposition", {"id": 3, "disposition": "defect"})  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

GENESIS = "0" * 64


class AuditLog:
    """An append-only JSON-lines file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last = GENESIS
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            if lines:
                self._last = hashlib.sha256(lines[-1].encode()).hexdigest()

    def append(self, user: str, action: str, details: dict) -> dict:
        """Write one entry (fsynced) and return it."""
        with self._lock:
            entry = {"time": time.time(), "user": user, "action": action, "details": details, "prev": self._last}
            line = json.dumps(entry, sort_keys=True)
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._last = hashlib.sha256(line.encode()).hexdigest()
            return entry

    def entries(self) -> list[dict]:
        """All entries, oldest first."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def verify_chain(path: str | Path) -> int | None:
    """Index of the first entry whose chain link is broken, or None if the log is intact."""
    prev = GENESIS
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if json.loads(line).get("prev") != prev:
            return i
        prev = hashlib.sha256(line.encode()).hexdigest()
    return None
