"""One evidence key per buffer: its fingerprint is kept in the database, a different key is refused at start,
and a key file changed under a running station is alarmed.

Without this, a replaced key file started silently and the buffer held images under two keys (the old
ones no longer readable on the station). Now the start is refused with what to do, and nothing is
written under a second key.

>>> check_fingerprint(db, vault, "station-data/evidence.key", "station-data/evidence")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from serving.alarms import Alarms
from serving.errors import ConfigError
from serving.evidence.crypto import (
    ImageUnreadable,
    ImageVault,
    KeyRefused,
    key_fingerprint,
    load_key,
)
from serving.evidence.meta import KEY_FINGERPRINT, get_meta, set_meta

#: how many of the newest stored images are tried before a buffer without a fingerprint is called foreign
_SAMPLES = 3


def _refuse(key_file: str, folder: str, fp: str, written: str) -> KeyRefused:
    return KeyRefused(
        f"evidence.key_file {key_file}: this key (fingerprint {fp}) is not the key the evidence in {folder} was written "
        f"with ({written}); the station will not mix two keys in one buffer. Restore the original key file from "
        f"its off-station copy, or move {folder} aside to start a new buffer with this key (the old records and "
        "images stay readable with the old key)")


def check_fingerprint(db: sqlite3.Connection, vault: ImageVault, key_file: str, folder: str,
                      image_names: list[str]) -> None:
    """Refuse (:class:`KeyRefused`) a key that is not the buffer's; record the fingerprint of a buffer's first key.

    ``image_names`` are the newest stored images (newest first): a buffer from before fingerprints (or a
    fresh one) takes this key only if one of them decrypts with it, or if it has none."""
    stored = get_meta(db, KEY_FINGERPRINT)
    if stored is not None:
        if stored != vault.fingerprint:
            raise _refuse(key_file, folder, vault.fingerprint, f"fingerprint {stored}")
        return
    tried = [n for n in image_names if (vault.folder / n).is_file()][:_SAMPLES]
    if tried:
        for name in tried:
            try:
                vault.read(name)
                break
            except ImageUnreadable:
                continue
        else:
            raise _refuse(key_file, folder, vault.fingerprint, f"none of its newest {len(tried)} images decrypts")
    set_meta(db, KEY_FINGERPRINT, vault.fingerprint)


class KeyFileWatch:
    """Notices a key file replaced or opened up while the station runs (checked by the housekeeper).

    The station keeps writing with the key it started with -- so nothing becomes unreadable -- and
    alarms, so the file is put back before the next start (which would refuse it)."""

    def __init__(self, key_file: str, fingerprint: str, alarms: Alarms) -> None:
        self.path, self.fingerprint, self.alarms = Path(key_file), fingerprint, alarms
        self._seen = self._stat()

    def _stat(self):
        try:
            s = os.stat(self.path)
            return s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode
        except OSError:
            return None

    def check(self) -> None:
        """Compare the key file with the running key when it changed on disk; alarm or clear."""
        now = self._stat()
        if now == self._seen:
            return
        self._seen = now
        try:
            fp = key_fingerprint(load_key(self.path))
            problem = None if fp == self.fingerprint else f"it now holds another key (fingerprint {fp})"
        except ConfigError as exc:  # gone, not a key, or readable by others
            problem = str(exc)
        if problem is None:
            self.alarms.clear("evidence_key_changed")
            return
        self.alarms.raise_("evidence_key_changed",
                           f"evidence key file {self.path} changed while the station runs: {problem}. Images are still "
                           f"written with the key the station started with ({self.fingerprint}); put that key file "
                           "back, or the next start is refused")
