"""Records the database could not take yet: kept in order in memory and in ``pending.jsonl``, retried.

>>> q = PendingRecords(Path("/tmp/lg-pending-doc"), max_len=100)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from serving.evidence.record import IMAGE_FIELDS, InspectionRecord

PENDING_FILE = "pending.jsonl"


class PendingRecords:
    """A bounded FIFO of records, mirrored to a JSON-lines file so a restart does not lose them."""

    def __init__(self, folder: Path, max_len: int) -> None:
        self.path, self.max_len = folder / PENDING_FILE, max_len
        self.items: deque[InspectionRecord] = deque()
        self.lost = 0
        self.memory_only = 0  # queued records the file could not take (a full disk): gone if the station stops
        if self.path.exists():
            self.items.extend(InspectionRecord.model_validate_json(line)
                              for line in self.path.read_text().splitlines() if line.strip())

    def __len__(self) -> int:
        return len(self.items)

    def image_names(self) -> set[str]:
        """Image files the queued records name (not orphans)."""
        return {n for r in self.items for n in (getattr(r, f) for f in IMAGE_FIELDS) if n}

    def describe(self) -> str:
        """What the queue holds, said as it is: on disk, in memory only, or lost."""
        text = f"{len(self.items)} records queued and retried"
        if self.memory_only:
            text += (f", {self.memory_only} of them in memory only ({self.path.name} cannot be written): they are "
                     "lost if the station stops")
        if self.lost:
            text += f"; {self.lost} records LOST (queue full)"
        return text

    def add(self, rec: InspectionRecord) -> None:
        """Queue ``rec`` (dropping, and counting, the oldest when full) and append it to the file."""
        if len(self.items) >= self.max_len:
            self.items.popleft()
            self.lost += 1
        self.items.append(rec)
        try:
            with open(self.path, "a") as fh:
                fh.write(rec.model_dump_json() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            self.memory_only += 1  # the in-memory queue still holds it; the store's alarm says so

    def drain(self, write: Callable[[InspectionRecord], object], errors: tuple[type[Exception], ...]) -> int:
        """Write queued records oldest first until one fails; return how many went. The file goes when empty."""
        done = 0
        while self.items:
            try:
                write(self.items[0])
            except errors:
                return done
            self.items.popleft()
            done += 1
            self.memory_only = min(self.memory_only, len(self.items))
        self.path.unlink(missing_ok=True)
        self.memory_only = 0
        return done
