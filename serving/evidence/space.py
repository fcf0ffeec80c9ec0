"""Free disk space under the evidence buffer: records go ahead of images.

``min_free_mb`` is kept free for records: a part's images are written only if the disk keeps that much
free after them; the housekeeper keeps twice as much free by dropping the oldest images (synced first).
So when the disk fills -- the quota larger than the disk, another program's files -- images give way
and records, a few KB each, still have room. The quota is checked against what the disk really holds.

And the same amount is *reserved*: once the disk runs low (under ten times ``min_free_mb`` free), a
reserve file (``reserve.bin``) holds that much of it; when the disk is full all the same (another
program took it) and the database refuses a record, the reserve file is deleted and the record goes into
the space it held. On a roomy disk there is no reserve file.

>>> Space("/tmp", min_free_mb=64).free_bytes() > 0
True
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MB = 1024 * 1024
RESERVE_FILE = "reserve.bin"


class Space:
    """Free bytes of the filesystem holding ``folder``, and the reserve kept for records."""

    def __init__(self, folder: str | Path, min_free_mb: float) -> None:
        self.folder = Path(folder)
        self.reserve = int(min_free_mb * MB)
        self.reserve_file = self.folder / RESERVE_FILE

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use there."""
        return shutil.disk_usage(self.folder).free

    def room_for_images(self, size: int) -> tuple[bool, int]:
        """(whether ``size`` bytes of images leave the reserve free, the free bytes now)."""
        free = self.free_bytes()
        return free - size >= self.reserve, free

    def image_budget(self, image_bytes: int, quota_bytes: int) -> int:
        """The most image bytes to keep: the quota, or less when the disk would then leave under twice the reserve."""
        return max(0, min(quota_bytes, image_bytes + self.free_bytes() - 2 * self.reserve))

    def short(self) -> bool:
        """True when even the reserve is not free (only records are kept then, while the database can grow)."""
        return self.free_bytes() < self.reserve

    def hold_reserve(self) -> bool:
        """Make the reserve file once the disk runs low (while it still has room for it beside twice the free
        reserve), give it back on a roomy disk; True when it is there."""
        if self.reserve == 0:
            return False
        free = self.free_bytes()
        if free >= 10 * self.reserve:
            self.reserve_file.unlink(missing_ok=True)
            return False
        if self.reserve_file.exists():
            return True
        if free < 3 * self.reserve:
            return False
        tmp = self.reserve_file.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve)  # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.reserve_file)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        return True

    def release_reserve(self) -> int:
        """Delete the reserve file (the disk is full and a record needs room); the bytes it freed."""
        try:
            size = self.reserve_file.stat().st_size
            self.reserve_file.unlink()
        except FileNotFoundError:
            return 0
        return size
