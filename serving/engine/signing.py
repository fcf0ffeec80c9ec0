"""Ed25519 signatures over a bundle's manifest: who made a bundle, and that nobody changed it since.

The pipeline signs the exact bytes of ``manifest.json``; the signature goes beside it in
``manifest.sig``. The manifest lists every file's sha256, so one signature covers the whole bundle:
editing a threshold, or swapping ``model.onnx`` and recomputing its hash, breaks it. A station
trusts the public keys its config lists (``bundles.trusted_keys``) and nothing else.

>>> create_keypair("keys/pipeline")          # doctest: +SKIP
(PosixPath('keys/pipeline.key'), PosixPath('keys/pipeline.pub'))
>>> sign_manifest(Path("bundle"), load_private_key("keys/pipeline.key"), "pipeline")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from serving.errors import BundleError, ConfigError

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def create_keypair(stem: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``STEM.key`` (private, PEM, mode 0600) and ``STEM.pub`` (public, PEM); refuse to overwrite a key."""
    stem = Path(stem)
    private, public = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    if not overwrite and (private.exists() or public.exists()):
        raise ConfigError(f"{private}: a signing key is already there; stations trust it. Keep it, or pass "
                          "--overwrite and list the new .pub in every station's bundles.trusted_keys")
    private.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The pipeline's signing key; refuses one that others may read (it could sign anything)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no signing key; create one with `lineguard keys create`")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise ConfigError(f"{path}: the signing key is readable by others (mode {path.stat().st_mode & 0o777:o}); "
                          f"run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a PEM private key ({exc}); create one with `lineguard keys create`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key; create one with `lineguard keys create`")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """A trusted public key (PEM, as ``lineguard keys create`` writes it)."""
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: trusted key not found; copy the pipeline's .pub file here") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM public key ({exc}); copy the pipeline's .pub file") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 public key")
    return key


def sign_manifest(root: Path, key: Ed25519PrivateKey, signer: str) -> Path:
    """Sign ``root/manifest.json`` as it is on disk; write ``root/manifest.sig``."""
    data = (root / "manifest.json").read_bytes()
    sig = {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()), "signer": signer,
           "manifest_sha256": hashlib.sha256(data).hexdigest(),
           "signature": base64.b64encode(key.sign(data)).decode()}
    tmp = root / (SIGNATURE_FILE + ".tmp")
    tmp.write_text(json.dumps(sig, indent=1))
    tmp.replace(root / SIGNATURE_FILE)
    return root / SIGNATURE_FILE


@dataclass(frozen=True)
class Trust:
    """What a station trusts: public keys by key id (named after their files), and whether unsigned bundles may run."""

    keys: dict[str, tuple[str, Ed25519PublicKey]]
    allow_unsigned: bool = False

    @classmethod
    def from_files(cls, paths: list[str], allow_unsigned: bool = False) -> "Trust":
        """Load the listed public key files (each named by its file stem)."""
        keys = {}
        for p in paths:
            k = load_public_key(p)
            keys[key_id(k)] = (Path(p).stem, k)
        return cls(keys, allow_unsigned)


@dataclass(frozen=True)
class Signature:
    """The outcome of checking a bundle's signature."""

    signed: bool
    signer: str | None = None
    key_id: str | None = None
    raw: bytes = field(default=b"", repr=False)  #: the ``manifest.sig`` bytes that verified (copies write these)

    def describe(self) -> str:
        """``signed by pipeline (key 1a2b...)`` or ``unsigned``."""
        return f"signed by {self.signer} (key {self.key_id})" if self.signed else "unsigned"


def verify_signature(root: Path, manifest_bytes: bytes, trust: Trust) -> Signature:
    """Check ``manifest.sig`` against the trusted keys; raise :class:`BundleError` saying why it is refused."""
    path = root / SIGNATURE_FILE
    if not path.is_file():
        if trust.allow_unsigned:
            return Signature(False)
        raise BundleError(f"{root}: unsigned bundle (no {SIGNATURE_FILE}); export it with a signing key "
                          "(`lineguard keys create`), or set bundles.allow_unsigned: true in the station config")
    raw = path.read_bytes()
    try:
        sig = json.loads(raw)
        kid, blob = str(sig["key_id"]), base64.b64decode(sig["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: unreadable signature ({type(exc).__name__}); re-export the bundle") from None
    if sig.get("algorithm") != ALGORITHM:
        raise BundleError(f"{path}: algorithm {sig.get('algorithm')!r}, this station verifies {ALGORITHM} only")
    if kid not in trust.keys:
        raise BundleError(f"{path}: signed by key {kid} ({sig.get('signer')!r}), which this station does not trust; "
                          "add its .pub to bundles.trusted_keys if it is yours")
    name, public = trust.keys[kid]
    try:
        public.verify(blob, manifest_bytes)
    except InvalidSignature:
        raise BundleError(f"{root}: the signature does not match manifest.json (the manifest was changed after "
                          f"signing by {name}); re-export the bundle") from None
    return Signature(True, name, kid, raw)
