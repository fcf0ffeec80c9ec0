"""Evidence images encrypted at rest: AES-256-GCM, one random nonce per file, bound to station and file name.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> vault = ImageVault(load_key(generate_key(d / "k.key")), "st1", d)
>>> n = vault.write("a.bin", b"png bytes")
>>> vault.read("a.bin")
b'png bytes'
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from serving.errors import ConfigError, LineguardError


class KeyRefused(ConfigError):
    """The evidence key may not be used: other users can read it, or it is not the key the evidence was written
    with. Unlike a missing key (the station runs on, without images), this stops the start."""


class ImageUnreadable(LineguardError):
    """A stored image cannot be read back: its file is gone, altered, or written under another key."""


def generate_key(path: str | Path) -> Path:
    """Write a new random 256-bit key (hex) readable only by its owner."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


def check_key_mode(path: Path) -> None:
    """Refuse a key file that users other than its owner may read or write (:class:`KeyRefused` says how to fix it).

    Refused rather than alarmed: a readable key undoes the encryption at rest for every other account on the
    machine, and a writable one lets another account swap it; ``chmod 600`` is the whole fix."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyRefused(f"evidence.key_file {path}: mode {mode:04o} lets other users read or replace the evidence key; "
                         f"run `chmod 600 {path}` (if others could read it, consider the evidence exposed)")


def load_key(path: str | Path) -> bytes:
    """Read a 32-byte key (64 hex characters); :class:`ConfigError` says how to make one, :class:`KeyRefused` how
    to fix its permissions."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"evidence.key_file {path}: not found; create one with `lineguard-station gen-key {path}` "
                          "and keep a copy off the station (without it the evidence cannot be read)")
    check_key_mode(path)
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"evidence.key_file {path}: not a hex key; regenerate with `lineguard-station gen-key`") from None
    if len(key) != 32:
        raise ConfigError(f"evidence.key_file {path}: {len(key)} bytes, AES-256-GCM needs 32")
    return key


def key_fingerprint(key: bytes) -> str:
    """A short public name of a key (sha256 of it): tells two keys apart without revealing either."""
    return hashlib.sha256(b"lineguard-evidence-key:" + key).hexdigest()[:16]


class ImageVault:
    """Encrypted image files in one folder; each written to a temporary, fsynced, then renamed."""

    def __init__(self, key: bytes, station_id: str, folder: Path) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.aead, self.station_id, self.folder = AESGCM(key), station_id, folder
        self.fingerprint = key_fingerprint(key)

    def _aad(self, name: str) -> bytes:
        return f"{self.station_id}/{name}".encode()

    def write(self, name: str, data: bytes) -> int:
        """Encrypt ``data`` to ``folder/name``; return the bytes written."""
        nonce = secrets.token_bytes(12)
        blob = nonce + self.aead.encrypt(nonce, data, self._aad(name))
        tmp = self.folder / (name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.folder / name)
        return len(blob)

    def read(self, name: str) -> bytes:
        """Decrypt ``folder/name``; :class:`ImageUnreadable` if it is gone, altered or written under another key."""
        from cryptography.exceptions import InvalidTag

        try:
            return self.decrypt(name, (self.folder / name).read_bytes())
        except FileNotFoundError:
            raise ImageUnreadable(f"image {name}: its file is gone from the evidence folder") from None
        except (InvalidTag, ValueError):
            raise ImageUnreadable(f"image {name}: cannot be decrypted with this station's key (fingerprint "
                                  f"{self.fingerprint}): it was altered, or written under another key") from None

    def decrypt(self, name: str, blob: bytes) -> bytes:
        """Decrypt the bytes of image file ``name`` read from anywhere (a sync target, a bucket)."""
        return self.aead.decrypt(blob[:12], blob[12:], self._aad(name))
