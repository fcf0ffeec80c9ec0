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

from serving.engine.bundle import CARRIED, MANIFEST, load_bundle
from serving.errors import LineguardError


class StationError(LineguardError):
    """A station could not be reached, refused the login, or refused the bundle."""


class StationTimeout(StationError):
    """A station did not answer in time, or failed (5xx): what it did is unknown until it is asked again."""


@dataclass
class StationClient:
    """One station's API, logged in as an engineer."""

    url: str
    user: str
    password: str
    verify: bool | str = True
    timeout: float = 120.0

    def __post_init__(self) -> None:
        import ssl

        self.url = self.url.rstrip("/")
        verify = ssl.create_default_context(cafile=self.verify) if isinstance(self.verify, str) else self.verify
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout, verify=verify)
        self._token: str | None = None

    def _call(self, method: str, path: str, **kw) -> dict:
        if self._token is None and path != "/api/login":
            self._login()
        headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {self._token}"} if self._token else {})}
        try:
            r = self._http.request(method, path, headers=headers, **kw)
        except httpx.TimeoutException as exc:
            raise StationTimeout(f"{self.url}: no answer to {method} {path} within {self.timeout:g} s "
                                 f"({type(exc).__name__})") from None
        except httpx.ConnectError as exc:
            if "CERTIFICATE" in str(exc).upper():
                raise StationError(f"{self.url}: its TLS certificate is not trusted ({exc}); pass --ca-cert") from None
            raise StationError(f"{self.url}: not reachable ({exc}); is the station running and its API bound to an "
                               "address this machine can reach?") from None
        except httpx.HTTPError as exc:
            raise StationError(f"{self.url}: {method} {path} failed ({type(exc).__name__}: {exc})") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            detail = body.get("detail", r.text[:300]) if isinstance(body, dict) else r.text[:300]
            raise (StationTimeout if r.status_code >= 500 else StationError)(
                f"{self.url}: {method} {path} answered {r.status_code}: {detail}")
        if not isinstance(body, dict):
            raise StationError(f"{self.url}: {method} {path} answered {r.status_code} with something that is not a "
                               "station's JSON (a proxy, or another service on that port?)")
        return body

    def field(self, body: dict, key: str, what: str):
        """``body[key]``, or a :class:`StationError` naming the station and what was missing."""
        if key not in body:
            raise StationError(f"{self.url}: its answer to {what} has no {key!r}; is this a Lineguard station of "
                               "this version?")
        return body[key]

    def _login(self) -> None:
        out = self._call("POST", "/api/login", json={"username": self.user, "password": self.password})
        if out.get("role") != "engineer":
            raise StationError(f"{self.url}: '{self.user}' is {out.get('role')}; deploying needs an engineer login")
        self._token = self.field(out, "token", "the login")

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
    names = [*b.manifest.files, *(n for n in CARRIED if (b.root / n).is_file())]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(set(names)):
            tar.add(b.root / name, arcname=name, recursive=False)
    if MANIFEST not in names:
        raise StationError(f"{bundle_dir}: no manifest to send")
    return buf.getvalue()
