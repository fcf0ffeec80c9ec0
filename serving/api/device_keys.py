"""Per-device API keys: long-lived, scoped to triggering, revocable by an engineer.

A PLC or remote I/O cannot log in and renew a 12-hour token; it sends ``X-Device-Key``. Only the
key's SHA-256 is stored (keys are 256-bit random tokens, so a fast hash is enough); the key itself
is shown once, when an engineer creates it.

>>> import tempfile, pathlib
>>> keys = DeviceKeys(pathlib.Path(tempfile.mkdtemp()) / "keys.json")
>>> key = keys.create("press-7-plc", "eddie")
>>> keys.check(key), keys.check("guess")
('press-7-plc', None)
>>> keys.revoke("press-7-plc"), keys.check(key) is None
(True, True)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path

from serving.errors import ConfigError

SCOPES = ("trigger",)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class DeviceKeys:
    """Hashed device keys in a JSON file (written atomically, readable by the station's user only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._keys: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (ValueError, OSError) as exc:
            raise ConfigError(f"api.device_keys {self.path}: cannot be read ({exc}); restore it from a backup, or "
                              "delete it and create the devices' keys again") from None

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._keys, fh, indent=1)
        tmp.replace(self.path)

    def create(self, name: str, user: str, scope: str = "trigger") -> str:
        """A new key for device ``name`` (replacing any old one); returned once, stored only as a hash."""
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r}: device keys may only have {SCOPES}")
        key = "lgd_" + secrets.token_urlsafe(32)
        with self._lock:
            self._keys[name] = {"sha256": _digest(key), "scope": scope, "created_by": user, "created": time.time()}
            self._save()
        return key

    def revoke(self, name: str) -> bool:
        """Remove device ``name``'s key; False if there was none."""
        with self._lock:
            gone = self._keys.pop(name, None) is not None
            if gone:
                self._save()
        return gone

    def check(self, key: str | None, scope: str = "trigger") -> str | None:
        """The device name a key belongs to, if it is valid for ``scope``."""
        if not key:
            return None
        digest = _digest(key)
        with self._lock:
            for name, entry in self._keys.items():
                if hmac.compare_digest(entry["sha256"], digest) and entry["scope"] == scope:
                    return name
        return None

    def listing(self) -> list[dict]:
        """Device names with scope, creator and time (never the hashes)."""
        with self._lock:
            return [{"name": n, **{k: v for k, v in e.items() if k != "sha256"}} for n, e in sorted(self._keys.items())]
