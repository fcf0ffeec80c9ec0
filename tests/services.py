"""Start real services as processes on 127.0.0.1, recorded by PID and stopped by it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}; log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout} s; log:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it has not gone in 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def service(cmd: list[str], health_url: str, log: Path, timeout: float = 120, env: dict | None = None):
    """Run ``cmd`` in its own process group until the block ends; yield when ``health_url`` answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        wait_http(health_url, timeout, proc, log)
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def mlflow_server(root: Path):
    """A real ``mlflow server`` on 127.0.0.1 with SQLite and proxied artifacts under ``root``; yields its URI."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
           "--workers", "1"]
    with service(cmd, f"http://127.0.0.1:{port}/health", root / "server.log", env={"MLFLOW_DISABLE_TELEMETRY": "true"}):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def plc_sim(tmp: Path, *extra: str):
    """The project's Modbus PLC simulator on 127.0.0.1; yields (port, edge-log path)."""
    port = free_port()
    edges = tmp / f"edges-{port}.jsonl"
    log = tmp / f"plcsim-{port}.log"
    cmd = [sys.executable, "-m", "serving.cli", "plc-sim", "--port", str(port), "--edges", str(edges), *extra]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"plc-sim exited: {log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"plc-sim not listening on {port}: {log.read_text()}")
        yield port, edges
    finally:
        stop(proc)


def coil_edges(edges: Path, address: int) -> list[tuple[int, int]]:
    """(t_ns, value) of every write to one coil, in order."""
    import json

    if not edges.exists():
        return []
    out = []
    for line in edges.read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == "coil" and e["address"] == address:
            out.append((e["t_ns"], e["values"][0]))
    return out
