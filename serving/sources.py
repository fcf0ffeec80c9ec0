"""Frame sources: replay (folder or video), OpenCV cameras, and triggers.

A :class:`FrameSource` runs a capture thread: it waits for a trigger (free-run pacing,
a Modbus coil the PLC sets, or an HTTP call), takes a monotonic timestamp at that
moment, grabs a frame and queues it with a part sequence number. A full queue drops
the oldest frame and counts it; a camera that disconnects is retried with backoff
and raises an alarm, and the process carries on.

>>> src = FrameSource(ReplayGrabber("data/elpv/test"), FreeRunTrigger(10.0))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from serving.alarms import Alarms
from serving.errors import ImageError
from serving.images import IMAGE_SUFFIXES, read_image, to_rgb

log = logging.getLogger("lineguard.sources")


@dataclass
class Frame:
    """One captured part: sequence number, monotonic trigger/capture times (ns), image or error."""

    seq: int
    t_trigger_ns: int
    t_capture_ns: int
    image: np.ndarray | None
    name: str
    error: str | None = None
    error_detail: str = ""
    encoder: int | None = None


class EndOfStream(Exception):
    """The replay has no more frames."""


class ReplayGrabber:
    """Images from a folder (sorted, recursive) or frames from a video file."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        self.path, self.loop = Path(path), loop
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise ImageError(f"{self.path}: no images to replay; check source.path")
            self.video = None
        elif self.path.is_file():
            self.files, self.video = [], cv2.VideoCapture(str(self.path))
            if not self.video.isOpened():
                raise ImageError(f"{self.path}: cannot open as a video; check source.path")
        else:
            raise ImageError(f"{self.path}: source.path does not exist")
        self.i = 0

    def grab(self) -> tuple[np.ndarray | None, str, str | None, str]:
        """(image RGB or None, name, error kind, detail)."""
        if self.video is not None:
            ok, frame = self.video.read()
            if not ok:
                if not self.loop:
                    raise EndOfStream
                self.video.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self.video.read()
            self.i += 1
            return to_rgb(frame, bgr=True), f"{self.path.name}#{self.i}", None, ""
        if self.i >= len(self.files):
            if not self.loop:
                raise EndOfStream
            self.i = 0
        p = self.files[self.i]
        self.i += 1
        name = str(p.relative_to(self.path))
        try:
            return read_image(p), name, None, ""
        except ImageError as exc:
            return None, name, "corrupt_frame", str(exc)


class OpenCVGrabber:
    """A camera index, RTSP URL or file through OpenCV, reconnected with backoff when it drops."""

    def __init__(self, device: str | int, alarms: Alarms, initial_s: float = 0.5, max_s: float = 10.0,
                 capture_factory=cv2.VideoCapture) -> None:
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.alarms, self.initial_s, self.max_s = alarms, initial_s, max_s
        self.factory = capture_factory
        self.cap = None
        self.reconnects = 0
        self._stop = threading.Event()

    def _open(self) -> None:
        delay = self.initial_s
        while not self._stop.is_set():
            self.cap = self.factory(self.device)
            if self.cap is not None and self.cap.isOpened():
                self.alarms.clear("camera")
                return
            self.reconnects += 1
            self.alarms.raise_("camera", f"camera {self.device!r} not available; retrying in {delay:.1f} s")
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_s)
        raise EndOfStream

    def grab(self) -> tuple[np.ndarray | None, str, str | None, str]:
        """Read one frame; on failure reconnect (backoff, alarm) and report a missing frame."""
        if self.cap is None or not self.cap.isOpened():
            self._open()
        ok, frame = self.cap.read()
        if not ok or frame is None:
            self.cap.release()
            self.cap = None
            self.alarms.raise_("camera", f"camera {self.device!r} disconnected; reconnecting")
            return None, str(self.device), "missing_frame", "camera read failed"
        try:
            return to_rgb(frame, bgr=True), str(self.device), None, ""
        except ImageError as exc:
            return None, str(self.device), "wrong_frame", str(exc)

    def stop(self) -> None:
        """Stop reconnect attempts."""
        self._stop.set()


class FreeRunTrigger:
    """Paces captures at ``rate_hz``; a capture that starts a full period late is counted late."""

    def __init__(self, rate_hz: float) -> None:
        self.period_ns = int(1e9 / rate_hz)
        self.next_ns: int | None = None
        self.late = 0

    def wait(self, stop: threading.Event) -> int | None:
        """Block until the next slot; return its monotonic time (ns) or None when stopped."""
        now = time.monotonic_ns()
        if self.next_ns is None:
            self.next_ns = now
        if now < self.next_ns:
            if stop.wait((self.next_ns - now) / 1e9):
                return None
        elif now - self.next_ns > self.period_ns:
            self.late += 1
            self.next_ns = now
        t = self.next_ns
        self.next_ns += self.period_ns
        return t


class HttpTrigger:
    """Triggers pushed by an HTTP call (``POST /api/trigger``), timestamped on arrival."""

    def __init__(self) -> None:
        self.q: queue.Queue[int] = queue.Queue()
        self.late = 0

    def fire(self, t_ns: int | None = None) -> None:
        """Record a trigger now (or at ``t_ns``)."""
        self.q.put(t_ns or time.monotonic_ns())

    def wait(self, stop: threading.Event) -> int | None:
        """Next trigger time, or None when stopped."""
        while not stop.is_set():
            try:
                return self.q.get(timeout=0.05)
            except queue.Empty:
                continue
        return None


class ModbusTrigger:
    """The PLC sets a coil to request a capture; the rising edge is timestamped and the coil reset."""

    def __init__(self, client_factory, coil: int, device_id: int, poll_ms: float, alarms: Alarms) -> None:
        self.factory, self.coil, self.device_id = client_factory, coil, device_id
        self.poll_s, self.alarms = poll_ms / 1e3, alarms
        self.client = None
        self.late = 0

    def wait(self, stop: threading.Event) -> int | None:
        """Poll the trigger coil until it is set; return the detection time (ns)."""
        delay = 0.2
        while not stop.is_set():
            try:
                if self.client is None:
                    self.client = self.factory()
                rr = self.client.read_coils(self.coil, count=1, device_id=self.device_id)
                if rr.isError():
                    raise ConnectionError(str(rr))
                self.alarms.clear("trigger")
                delay = 0.2
                if rr.bits[0]:
                    t = time.monotonic_ns()
                    reset = self.client.write_coil(self.coil, False, device_id=self.device_id)
                    if reset.isError():  # a coil left set would trigger a phantom part on the next poll
                        raise ConnectionError(f"cannot reset trigger coil {self.coil}: {reset}")
                    return t
                stop.wait(self.poll_s)
            except Exception as exc:  # noqa: BLE001 - any transport error: alarm, back off, retry
                self.alarms.raise_("trigger", f"trigger PLC unreachable ({exc}); retrying")
                self.client = None
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        return None


class FrameSource:
    """Capture thread + bounded queue: trigger -> timestamp -> grab -> Frame."""

    def __init__(self, grabber, trigger, queue_size: int = 4, max_frames: int | None = None) -> None:
        self.grabber, self.trigger = grabber, trigger
        self.q: queue.Queue[Frame | None] = queue.Queue(maxsize=queue_size)
        self.max_frames = max_frames
        self.dropped = 0
        self.missed: list[Frame] = []
        self._missed_lock = threading.RLock()
        self.seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    @property
    def late(self) -> int:
        """Captures that started late (free-run pacing could not keep up)."""
        return self.trigger.late

    def start(self) -> "FrameSource":
        """Start capturing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop capturing (the consumer then sees end of stream)."""
        self._stop.set()
        if hasattr(self.grabber, "stop"):
            self.grabber.stop()

    def _put(self, item: Frame | None) -> None:
        while True:
            try:
                self.q.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = self.q.get_nowait()
                except queue.Empty:
                    continue
                if old is not None:
                    # the image is dropped, the part is not: it still gets a (fail-safe) verdict
                    self.dropped += 1
                    with self._missed_lock:
                        self.missed.append(Frame(old.seq, old.t_trigger_ns, old.t_capture_ns, None, old.name,
                                                 "missing_frame", "dropped: inspection fell behind"))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.seq >= self.max_frames:
                    break
                t = self.trigger.wait(self._stop)
                if t is None:
                    break
                try:
                    img, name, err, detail = self.grabber.grab()
                except EndOfStream:
                    break
                except Exception as exc:  # noqa: BLE001 - the part was triggered: it gets a fail-safe verdict
                    img, name, err, detail = None, "capture", "missing_frame", f"{type(exc).__name__}: {exc}"
                self.seq += 1
                self._put(Frame(self.seq, t, time.monotonic_ns(), img, name, err, detail))
        except Exception:  # noqa: BLE001 - the capture thread must end the stream, not hang it
            log.exception("capture thread failed")
        finally:
            self._put(None)

    def get(self, timeout: float | None = None) -> Frame | None:
        """Next frame (parts whose image was dropped come first, without image), or None at end of stream."""
        with self._missed_lock:
            if self.missed:
                return self.missed.pop(0)
        item = self.q.get(timeout=timeout)
        with self._missed_lock:
            if item is None and self.missed:  # end of stream: hand out the dropped parts first
                self._put(None)
                return self.missed.pop(0)
        return item
