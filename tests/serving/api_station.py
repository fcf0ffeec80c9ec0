"""A real station process with its API on 127.0.0.1, started through the CLI as a line runs it (security tests)."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from services import free_port, stop


@dataclass
class Running:
    """A station process: its PID, API base URL and log file."""

    proc: subprocess.Popen
    url: str
    port: int
    log: Path

    def status(self) -> dict[str, int]:
        """VmRSS, VmHWM (peak) ... of the process, in kB, from /proc."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Vm"):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
        return out


def write_config(tmp: Path, cfg, name: str = "station.yaml") -> Path:
    """``cfg`` (a StationConfig) as the YAML file a station is run from."""
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@contextlib.contextmanager
def running_station(tmp: Path, cfg, *args: str, cafile: Path | None = None, timeout: float = 120):
    """Run ``lineguard-station run`` on ``cfg`` until the block ends; yield once ``/healthz`` answers.

    With ``cafile`` the API is HTTPS and checked against that certificate."""
    port = free_port()
    path = write_config(tmp, cfg)
    scheme = "https" if cafile else "http"
    log = tmp / f"station-{port}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "run", "--config", str(path), "--api-port",
                                 str(port), *args], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"station exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/healthz", timeout=2, context=context) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"station API not up after {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Running(proc, f"{scheme}://127.0.0.1:{port}", port, log)
    finally:
        stop(proc)
