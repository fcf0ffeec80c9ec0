"""Start real services as processes on 127.0.0.1, recorded by PID and stopped by it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import typing
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
def plc_sim(tmp: Path, *extra: str, capture_proc: bool = False):
    """The project's Modbus PLC simulator on 127.0.0.1; yields (port, edge-log path[, process])."""
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
        yield (port, edges, proc) if capture_proc else (port, edges)
    finally:
        stop(proc)


def events(edges: Path, kind: str, address: int | None = None) -> list[dict]:
    """Events of one kind (coil, hr, output, plc_trigger, watchdog, ...) from a PLC simulator's log, in order."""
    import json

    if not edges.exists():
        return []
    out = [json.loads(line) for line in edges.read_text().splitlines() if line.strip()]
    return [e for e in out if e["kind"] == kind and (address is None or e["address"] == address)]


def coil_edges(edges: Path, address: int) -> list[tuple[int, int]]:
    """(t_ns, value) of every write to one coil, in order."""
    return [(e["t_ns"], e["values"][0]) for e in events(edges, "coil", address)]


def pulses(edges: Path, kind: str = "coil", address: int = 0) -> list[tuple[int, int]]:
    """[(t_on, t_off)] of the reject coil as written (kind coil) or of the PLC's physical output (kind output)."""
    out, on = [], None
    for e in events(edges, kind, address):
        v = e["values"][0]
        if v and on is None:
            on = e["t_ns"]
        elif not v and on is not None:
            out.append((on, e["t_ns"]))
            on = None
    return out


def barcode_frames(n: int, w: int = 160, h: int = 120):
    """``n`` grey frames, each with its index as a 16-bit barcode of 10x10 blocks along the top (BGR uint8)."""
    import numpy as np

    for i in range(n):
        img = np.full((h, w, 3), 90, np.uint8)
        img[40:, :] = ((np.indices((h - 40, w)).sum(0) * 3 + i) % 255)[:, :, None]  # texture that moves
        for bit in range(16):
            img[0:10, bit * 10:(bit + 1) * 10] = 255 if (i >> bit) & 1 else 0
        yield img


def read_barcode(rgb) -> int:
    """The frame index :func:`barcode_frames` drew into an image."""
    return sum(1 << bit for bit in range(16) if rgb[5, bit * 10 + 5].mean() > 127)


def make_video(path: Path, n: int = 900, fps: int = 10) -> Path:
    """An H.264 file of ``n`` barcoded frames (ffmpeg from Debian), yuv420p, a keyframe every second."""
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "160x120",
           "-r", str(fps), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(fps), "-crf", "18", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for f in barcode_frames(n):
        proc.stdin.write(f.tobytes())
    proc.stdin.close()
    if proc.wait(120) != 0:
        raise RuntimeError("ffmpeg could not encode the test video")
    return path


class CameraStream:
    """A live HTTP/MPEG-TS camera served by ffmpeg (``-re``: in real time), restarted whenever it ends.

    ffmpeg's ``-listen 1`` serves one client and exits when it leaves, so a supervisor thread restarts it.
    ``kill()`` takes the camera away, ``freeze()`` hangs it (SIGSTOP), ``thaw()`` and ``resume()`` bring it back.
    """

    def __init__(self, video: Path, port: int | None = None) -> None:
        self.video, self.port = video, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/cam.ts"
        self.proc: subprocess.Popen | None = None
        self._run = True
        self._alive = True
        import threading

        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def start(self) -> "CameraStream":
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.listening():
            time.sleep(0.02)
        return self

    def listening(self) -> bool:
        """True when ffmpeg listens (read from /proc: a test connection would use up its one client)."""
        hexport = f":{self.port:04X}"
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as fh:
                if any(hexport in line.split()[1] and line.split()[3] == "0A" for line in fh.readlines()[1:]):
                    return True
        return False

    def _supervise(self) -> None:
        while self._alive:
            if not self._run:
                time.sleep(0.02)
                continue
            self.proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                                          "-stream_loop", "-1", "-i", str(self.video), "-c", "copy", "-f", "mpegts",
                                          "-listen", "1", self.url], start_new_session=True)
            self.proc.wait()
            time.sleep(0.05)

    def _signal(self, sig) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """The camera is gone (and stays gone until :meth:`resume`)."""
        self._run = False
        self._signal(signal.SIGKILL)

    def freeze(self) -> None:
        """The camera hangs: the connection stays open, nothing comes."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """A frozen camera moves again."""
        self._signal(signal.SIGCONT)

    def resume(self) -> None:
        """A killed camera comes back."""
        self._run = True

    def stop(self) -> None:
        self._alive = False
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self._thread.join(5)


class S3Server(typing.NamedTuple):
    endpoint: str  #: http://127.0.0.1:PORT
    port: int
    proc: subprocess.Popen  #: to freeze it (SIGSTOP) in a test


@contextlib.contextmanager
def s3_server(root: Path, bucket: str = "evidence"):
    """moto's S3 API server (server mode, a real process) on 127.0.0.1 with ``bucket`` made; yields an
    :class:`S3Server`.

    The same server ``scripts/s3-server.sh`` starts by hand. moto accepts any credentials; its data lives in
    the process, so a network cut is made with a :class:`Relay` in front of it, not by stopping it."""

    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with service(cmd, f"http://127.0.0.1:{port}/moto-api/", root / f"moto-{port}.log", timeout=60) as proc:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status
        yield S3Server(f"http://127.0.0.1:{port}", port, proc)


class Relay:
    """A TCP relay process (tests/tools/tcp_relay.py) in front of a server: ``cut()`` stops it -- the link is
    down, connections refused --, ``restore()`` starts it again on the same port."""

    def __init__(self, target_port: int, log: Path) -> None:
        self.target, self.log = target_port, log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def restore(self) -> "Relay":
        script = Path(__file__).parent / "tools" / "tcp_relay.py"
        with open(self.log, "a") as fh:
            self.proc = subprocess.Popen([sys.executable, str(script), str(self.port), str(self.target)], stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"relay not listening on {self.port}")

    def cut(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def __enter__(self) -> "Relay":
        return self.restore()

    def __exit__(self, *exc) -> None:
        self.cut()
