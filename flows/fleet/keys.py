"""The pipeline's signing key: every bundle it exports, recalibrates or trains is signed with it.

Stations trust the matching ``.pub`` (``bundles.trusted_keys``). Without the key file an export still
works but writes an unsigned bundle, and says so: a station refuses it unless ``allow_unsigned``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flows.settings import project_root
from serving.engine.signing import create_keypair, load_private_key, sign_manifest

log = logging.getLogger("lineguard.keys")


def key_path(configured: str | None) -> Path | None:
    """The signing key file, relative paths against the project folder; None when signing is switched off."""
    if not configured:
        return None
    p = Path(configured)
    return p if p.is_absolute() else project_root() / p


def signer(configured: str | None) -> Callable[[Path], Path] | None:
    """A function that signs a bundle folder's manifest, or None (with a warning) when there is no key."""
    path = key_path(configured)
    if path is None:
        return None
    if not path.exists():
        log.warning("no signing key at %s: the bundle is UNSIGNED and stations will refuse it; create one with "
                    "`lineguard keys create` (or set export.signing_key)", path)
        return None
    key = load_private_key(path)
    name = path.stem
    return lambda root: sign_manifest(Path(root), key, name)


def ensure_key(configured: str | None) -> Path | None:
    """The demos' signing key: created on first use (a real project runs `lineguard keys create` once)."""
    path = key_path(configured)
    if path is not None and not path.exists():
        create_keypair(path.with_suffix(""))
        log.warning("created the signing key %s and %s; stations list the .pub under bundles.trusted_keys",
                    path, path.with_suffix(".pub"))
    return path
