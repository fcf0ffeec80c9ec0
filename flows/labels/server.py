"""A Label Studio server for the project, on 127.0.0.1, from its own venv (``.venv-labelstudio``).

``lineguard labels server start`` starts it non-interactively (an admin and an API token from
environment variables, telemetry off, images served from the project's ``data/`` as its Local Files root),
records its PID under ``.lineguard/labelstudio/`` and waits for ``/health``; ``stop`` stops it by that
PID. Label Studio's pins clash with the pipeline's, hence its own venv (``scripts/setup.sh`` makes it).

>>> info = start()          # doctest: +SKIP
>>> info["url"], info["pid"]   # doctest: +SKIP
('http://127.0.0.1:8080', 12345)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.settings import project_root
from serving.errors import ConfigError

DEFAULT_PORT = 8080
ADMIN = "admin@lineguard.local"


@dataclass
class ServerInfo:
    """Where the project's Label Studio is and how to talk to it."""

    url: str
    token: str
    files_root: str
    pid: int | None = None


def home() -> Path:
    """State of the project's Label Studio: data dir, PID, log, connection file (private: it holds the token)."""
    d = project_root() / ".lineguard" / "labelstudio"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    return d


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only, from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _started_at(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), to tell it from a later process with its PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def files_root() -> Path:
    """What Label Studio serves as Local Files: the project's ``data/`` (the label store lives in data/labels)."""
    d = project_root() / "data"
    d.mkdir(parents=True, exist_ok=True)
    return d


def venv_bin() -> Path:
    """The ``label-studio`` executable of the project's Label Studio venv."""
    exe = Path(os.environ.get("LINEGUARD_LABEL_STUDIO_VENV", project_root() / ".venv-labelstudio")) / "bin" / "label-studio"
    if not exe.exists():
        raise ConfigError(f"{exe}: Label Studio is not installed; run `bash scripts/setup.sh` (it makes its own venv: "
                          "python3 -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install label-studio==1.23.2)")
    return exe


def connection() -> ServerInfo:
    """The running server's URL and token (``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` win, for a site's own)."""
    if os.environ.get("LABEL_STUDIO_URL"):
        return ServerInfo(os.environ["LABEL_STUDIO_URL"].rstrip("/"), os.environ.get("LABEL_STUDIO_API_KEY", ""),
                          os.environ.get("LABEL_STUDIO_FILES_ROOT", str(files_root())))
    path = home() / "server.json"
    if not path.exists():
        return ServerInfo(f"http://127.0.0.1:{DEFAULT_PORT}", "", str(files_root()))
    return ServerInfo(**json.loads(path.read_text()))


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when Label Studio answers ``/health`` with UP."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return json.loads(r.read()).get("status") == "UP"
    except (OSError, ValueError):
        return False


def _pid() -> int | None:
    """The recorded server's PID while that very process runs (a stale or reused PID counts as none)."""
    path = home() / "ls.pid"
    if not path.exists():
        return None
    try:
        pid, _, started = path.read_text().strip().partition(" ")
        pid = int(pid)
        os.kill(pid, 0)
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if started and _started_at(pid) not in (None, started):  # the PID now belongs to another process
        path.unlink(missing_ok=True)
        return None
    return pid


def start(port: int = DEFAULT_PORT, timeout: float = 240.0) -> dict:
    """Start Label Studio (if not running) and wait until it is healthy; return its connection and PID."""
    info = connection()
    if _pid() is not None and healthy(info.url):
        return {**asdict(info), "pid": _pid()}
    exe = venv_bin()
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
        # Label Studio would silently move to port+1 and the health check would find someone else
        raise ConfigError(f"port {port} on 127.0.0.1 is taken; pick another with --port")
    d = home()
    data = d / "data"
    for sub in ("xdg/config", "xdg/data", "xdg/cache"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    secrets = d / "secrets.json"
    if not secrets.exists():  # made once per installation, never in git
        _write_private(secrets, json.dumps({"password": os.urandom(12).hex(), "token": os.urandom(20).hex(),
                                            "secret_key": os.urandom(24).hex()}))
    s = json.loads(secrets.read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST", "USER_TOKEN", "USERNAME", "PASSWORD")}
    env.update({
        "LABEL_STUDIO_USERNAME": ADMIN, "LABEL_STUDIO_PASSWORD": s["password"], "LABEL_STUDIO_USER_TOKEN": s["token"],
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "SECRET_KEY": s["secret_key"],
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root()),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data), "XDG_CONFIG_HOME": str(data / "xdg/config"),
        "XDG_DATA_HOME": str(data / "xdg/data"), "XDG_CACHE_HOME": str(data / "xdg/cache"),
    })
    url = f"http://127.0.0.1:{port}"
    with open(d / "ls.log", "a") as log:
        proc = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
                                 "--data-dir", str(data)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=data, env=env, start_new_session=True)
    (d / "ls.pid").write_text(f"{proc.pid} {_started_at(proc.pid) or ''}".strip())
    info = ServerInfo(url, s["token"], str(files_root()), proc.pid)
    _write_private(d / "server.json", json.dumps(asdict(info)))
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            tail = (d / "ls.log").read_text()[-2000:]
            raise ConfigError(f"Label Studio did not become healthy on {url}; its log ends:\n{tail}")
        time.sleep(0.5)
    return asdict(info)


def stop(grace: float = 10.0) -> bool:
    """Stop the server by its recorded PID (TERM, then KILL); False when none was running."""
    pid = _pid()
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid() is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _pid() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    (home() / "ls.pid").unlink(missing_ok=True)
    return True


def status() -> dict:
    """PID, URL and health of the project's Label Studio."""
    info = connection()
    return {"url": info.url, "pid": _pid(), "healthy": healthy(info.url), "files_root": info.files_root}
