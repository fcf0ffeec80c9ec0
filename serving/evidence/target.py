"""Where evidence syncs to: a folder (path or ``file://``) or an S3-compatible bucket (``s3://``, through s3fs).

Both take whole objects under a key and replace them whole: a folder by writing a temporary, fsyncing and
renaming it, S3 by its atomic PUT. So writing the same key again -- a retried or interrupted upload -- never
leaves two copies nor half of one. s3fs is imported only for an ``s3://`` target: a station that syncs to a
folder runs without it.

>>> t = open_target(EvidenceConfig(sync_url="/tmp/lg-sync-doc"))   # doctest: +SKIP
>>> t.put_many({"st1/records/b/1.json": b"{}"})                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from serving.errors import ConfigError
from serving.evidence.config import EvidenceConfig

MIN_RATE = 50_000  #: bytes/s an S3 upload is given before it is called failed
PER_OBJECT_S = 0.05  #: and seconds per object (a small server answers one PUT at a time)


class SyncOffline(ConnectionError):
    """The sync target cannot be reached or refused the upload; nothing is marked synced."""


def display_url(url: str | None) -> str | None:
    """``url`` without any user, password or query (what the page shows and the log names)."""
    if not url:
        return url
    if "://" not in url:
        return url
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


def read_secret(path: str) -> str:
    """The secret in ``path`` (one line); refused if other users may read it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"evidence.sync_secret_file {p}: not found; write the S3 secret access key into it "
                          f"(one line) and run `chmod 600 {p}`")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"evidence.sync_secret_file {p}: mode {mode:04o} lets other users read the S3 secret; "
                          f"run `chmod 600 {p}`")
    secret = p.read_text().strip()
    if not secret:
        raise ConfigError(f"evidence.sync_secret_file {p}: empty; write the S3 secret access key into it")
    return secret


class FolderTarget:
    """A folder (a mounted share, a USB disk): objects are files, written atomically."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = Path(url.removeprefix("file://"))

    def check(self) -> None:
        """Raise :class:`SyncOffline` unless the folder is there (a missing parent means a missing mount)."""
        if not self.root.is_dir() and self.root.parent.is_dir():
            self.root.mkdir(exist_ok=True)  # a first sync into a folder not made yet
        if not self.root.is_dir():
            raise SyncOffline(f"evidence sync target {self.url} not reachable (is it mounted?)")

    def put_many(self, objects: Mapping[str, bytes]) -> None:
        """Write every object (temporary, fsync, rename): each file is complete or absent."""
        self.check()
        try:
            for key, data in objects.items():
                path = self.root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".part")
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                tmp.replace(path)
        except OSError as exc:
            raise SyncOffline(f"evidence sync target {self.url}: {exc.strerror or exc}") from None

    def keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (for tests and the benchmark's count)."""
        base = self.root / prefix
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    def get(self, key: str) -> bytes:
        """One object's bytes."""
        return (self.root / key).read_bytes()


class S3Target:
    """An S3-compatible bucket through s3fs; each object one PUT, a batch sent concurrently."""

    def __init__(self, cfg: EvidenceConfig) -> None:
        try:
            import s3fs
        except ImportError:
            raise ConfigError(f"evidence.sync_url {display_url(cfg.sync_url)}: an s3:// target needs s3fs; install "
                              "the station extra (pip install 'lineguard[station]')") from None
        p = urlsplit(cfg.sync_url)
        self.url = display_url(cfg.sync_url)
        self.endpoint = display_url(cfg.sync_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
                                    or os.environ.get("AWS_ENDPOINT_URL")) or "AWS"
        self.bucket, self.prefix = p.netloc, p.path.strip("/")
        creds = {}
        if cfg.sync_key_id:
            creds = {"key": cfg.sync_key_id, "secret": read_secret(cfg.sync_secret_file)}
        client = {"region_name": cfg.sync_region} if cfg.sync_region else {}
        t = cfg.sync_timeout_s
        self.fs = s3fs.S3FileSystem(
            endpoint_url=cfg.sync_endpoint, client_kwargs=client, skip_instance_cache=True,
            use_listings_cache=False,
            config_kwargs={"connect_timeout": t, "read_timeout": t, "retries": {"total_max_attempts": 1}}, **creds)
        self.fs.retries = 2  # s3fs's own retry loop: one more try, then the housekeeper's next round
        self.timeout = t

    def _path(self, key: str) -> str:
        return "/".join(x for x in (self.bucket, self.prefix, key) if x)

    def check(self) -> None:
        """Raise :class:`SyncOffline` unless the bucket answers."""
        try:
            if not self.fs.exists(self.bucket, timeout=3 * self.timeout):
                raise SyncOffline(f"evidence sync target {self.url}: bucket {self.bucket!r} not found; create it "
                                  "or fix evidence.sync_url")
        except SyncOffline:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and OS errors alike mean offline
            raise SyncOffline(f"evidence sync target {self.url} (endpoint {self.endpoint}) not reachable "
                              f"({_short(exc)})") from None

    def put_many(self, objects: Mapping[str, bytes]) -> None:
        """PUT every object (concurrently); any failure raises :class:`SyncOffline` and the batch goes again."""
        if not objects:
            return
        # a whole-call deadline: a server that accepts the connection and then hangs is not caught by
        # botocore's read timeout on a PUT (seen with moto stopped by SIGSTOP); the link is assumed to carry
        # at least MIN_RATE bytes/s and PER_OBJECT_S per object, or the batch goes again next round
        deadline = 3 * self.timeout + sum(len(v) for v in objects.values()) / MIN_RATE + PER_OBJECT_S * len(objects)
        try:
            self.fs.pipe({self._path(k): v for k, v in objects.items()}, timeout=deadline)
        except Exception as exc:  # noqa: BLE001 - whatever failed, nothing is marked synced
            raise SyncOffline(f"evidence sync target {self.url} (endpoint {self.endpoint}): upload failed "
                              f"({_short(exc)})") from None

    def keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``."""
        base = self._path(prefix)
        root = self._path("")
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(p[len(root) + 1:] for p in found)

    def get(self, key: str) -> bytes:
        """One object's bytes."""
        return self.fs.cat_file(self._path(key))


def _short(exc: Exception) -> str:
    """The failure in a few stable words (the alarm is not re-logged for every object name in a message)."""
    name = type(exc).__name__
    if name == "EndpointConnectionError":
        return "cannot connect"
    if name in ("FSTimeoutError", "TimeoutError", "ReadTimeoutError", "ConnectTimeoutError"):
        return "no answer in time"
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    if code:
        return f"{name}: {code}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{name}: {exc.strerror}"
    text = str(exc).split(":")[0].splitlines()[0] if str(exc) else ""
    return f"{name}: {text[:120]}" if text else name


def open_target(cfg: EvidenceConfig) -> FolderTarget | S3Target:
    """The sync target ``cfg.sync_url`` names (a :class:`ConfigError` says what is wrong with it)."""
    if not cfg.sync_url:
        raise ConfigError("evidence.sync_url is not set")
    if cfg.sync_url.startswith("s3://"):
        return S3Target(cfg)
    return FolderTarget(cfg.sync_url)
