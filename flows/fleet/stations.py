"""Talking to stations over their HTTP API as an engineer: log in, read state, upload, roll back.

Every failure becomes a :class:`StationError` that names the station and says what to do; an unreachable
station never stops a deploy to the others.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving.engine.bundle import MANIFEST, UNLISTED_OK, load_bundle
from serving.errors import LineguardError


class StationError(LineguardError):
    """A station could not be reached, refused the login, or refused the bundle."""


@dataclass
class StationClient:
    """One station's API, logged in as an engineer."""

    url: str
    user: str
    password: str
    verify: bool | str = True
    timeout: float = 120.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout, verify=self.verify)
        self._token: str | None = None

    def _call(self, method: str, path: str, **kw) -> dict:
        if self._token is None and path != "/api/login":
            self._login()
        headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {self._token}"} if self._token else {})}
        try:
            r = self._http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise StationError(f"{self.url}: not reachable ({type(exc).__name__}: {exc}); is the station running "
                               "and its API bound to an address this machine can reach?") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text[:300]
            raise StationError(f"{self.url}: {method} {path} answered {r.status_code}: {detail}")
        return r.json()

    def _login(self) -> None:
        out = self._call("POST", "/api/login", json={"username": self.user, "password": self.password})
        if out.get("role") != "engineer":
            raise StationError(f"{self.url}: '{self.user}' is {out.get('role')}; deploying needs an engineer login")
        self._token = out["token"]

    def state(self) -> dict:
        """The station's live state (``/api/state``)."""
        return self._call("GET", "/api/state")

    def bundle(self) -> dict:
        """The running bundle's manifest, signature and version history (``/api/bundle``)."""
        return self._call("GET", "/api/bundle")

    def upload(self, bundle_dir: Path) -> dict:
        """Send a bundle folder; returns the station's switch result (it answers once it runs the bundle)."""
        return self._call("POST", "/api/bundle/upload", content=bundle_tar(bundle_dir),
                          headers={"Content-Type": "application/octet-stream"})

    def rollback(self, kind: str = "anomaly") -> dict:
        """Return the station to its previous version of ``kind``."""
        return self._call("POST", "/api/bundle/rollback", json={"kind": kind})

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def bundle_tar(bundle_dir: Path) -> bytes:
    """A gzipped tar of exactly the files a station accepts: the manifest's, the manifest and its signature."""
    b = load_bundle(bundle_dir)
    names = [*b.manifest.files, *(n for n in UNLISTED_OK if n != "enrollment.pt" and (b.root / n).is_file())]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(set(names)):
            tar.add(b.root / name, arcname=name, recursive=False)
    if MANIFEST not in names:
        raise StationError(f"{bundle_dir}: no manifest to send")
    return buf.getvalue()
