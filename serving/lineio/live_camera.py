"""A live camera (OpenCV: camera index, RTSP/HTTP stream, file) read by a grabber thread that keeps the newest frames.

OpenCV's ``read()`` hands out the *oldest* undelivered frame and never drops one, so a station
slower than the stream falls seconds behind the line. Here a grabber thread reads continuously
and keeps only the last few frames with their arrival times; the station takes the frame nearest
its trigger (free-run: the next one), and a frame older than ``max_frame_age_ms`` is never
inspected as current. Opening and reading are bounded by timeouts (FFmpeg's), reconnects back off,
and a watchdog raises the camera alarm when no frame has come for ``watchdog_s`` -- and replaces a
grabber thread stuck in a driver call, which Python cannot interrupt.

>>> cam = LiveCamera("http://127.0.0.1:8554/cam.ts", Alarms()).start()   # doctest: +SKIP
>>> shot = cam.take(time.monotonic_ns())                               # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass

os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "fpsprobesize;0")  # open in ms, without a stale backlog
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from serving.alarms import Alarms  # noqa: E402
from serving.errors import ImageError  # noqa: E402
from serving.images import to_rgb  # noqa: E402
from serving.lineio.frames import Shot  # noqa: E402


@dataclass(frozen=True)
class _Grabbed:
    index: int
    t_ns: int
    image: np.ndarray


class LiveCamera:
    """The newest frames of a live source, with capture times, a watchdog and non-blocking reconnects."""

    def __init__(self, device: str | int, alarms: Alarms, *, open_timeout_s: float = 3.0, read_timeout_s: float = 1.0,
                 watchdog_s: float = 1.0, max_frame_age_ms: float = 250.0, reconnect_max_s: float = 2.0,
                 capture_factory=None) -> None:
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.alarms, self.open_timeout_s, self.read_timeout_s = alarms, open_timeout_s, read_timeout_s
        self.watchdog_s, self.max_age_ns, self.reconnect_max_s = watchdog_s, int(max_frame_age_ms * 1e6), reconnect_max_s
        self.factory = capture_factory or self._open
        self._frames: deque[_Grabbed] = deque(maxlen=8)
        self._cv = threading.Condition()
        self._index = 0
        self._taken = 0  # index of the last frame inspected: never inspect one twice
        self._last_frame_ns = time.monotonic_ns()
        self._beat = time.monotonic()  # the current grabber thread's last sign of life
        self._generation = 0
        self._stop = threading.Event()
        self.reconnects = 0
        self.watchdog_restarts = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LiveCamera":
        """Start grabbing (opening happens on the grabber thread: the station never waits for it)."""
        self._spawn()
        threading.Thread(target=self._watchdog, name="camera-watchdog", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop grabbing and reconnecting."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def _spawn(self) -> None:
        self._generation += 1
        self._beat = time.monotonic()
        threading.Thread(target=self._grab_loop, args=(self._generation,), name=f"camera-{self._generation}",
                         daemon=True).start()

    def _open(self, device):
        if isinstance(device, int):
            return cv2.VideoCapture(device)
        ms = lambda s: int(s * 1000)  # noqa: E731
        return cv2.VideoCapture(device, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms(self.open_timeout_s),
                                                         cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms(self.read_timeout_s)])

    # ------------------------------------------------------------------ grabber
    def _grab_loop(self, generation: int) -> None:
        delay = 0.1
        while not self._stop.is_set() and generation == self._generation:
            self._beat = time.monotonic()
            cap = self.factory(self.device)
            if cap is None or not cap.isOpened():
                if cap is not None:
                    cap.release()
                self.reconnects += 1
                self.alarms.raise_("camera", f"camera {self.device!r} cannot be opened; retrying every "
                                             f"{self.reconnect_max_s:g} s at most")
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            delay = 0.1
            while not self._stop.is_set() and generation == self._generation:
                self._beat = time.monotonic()
                ok, frame = cap.read()  # bounded by the read timeout on streams
                t = time.monotonic_ns()
                if not ok or frame is None:
                    break  # a failed read never recovers on the same capture: reopen
                with self._cv:
                    self._index += 1
                    self._frames.append(_Grabbed(self._index, t, frame))
                    self._last_frame_ns = t
                    self._cv.notify_all()
                self.alarms.clear("camera")
            cap.release()
            if not self._stop.is_set() and generation == self._generation:
                self.alarms.raise_("camera", f"camera {self.device!r} stream lost; reconnecting")

    def _watchdog(self) -> None:
        period = min(self.watchdog_s / 4, 0.1)
        while not self._stop.wait(period):
            silent = (time.monotonic_ns() - self._last_frame_ns) / 1e9
            if silent > self.watchdog_s:
                self.alarms.raise_("camera", f"camera {self.device!r}: no new frame for more than "
                                             f"{self.watchdog_s:g} s (stream dead or hung)")
            stuck = time.monotonic() - self._beat
            if stuck > self.open_timeout_s + self.read_timeout_s + 2 * self.watchdog_s:
                self.watchdog_restarts += 1  # the grabber is stuck inside a driver call: abandon it, start anew
                self._spawn()

    # ------------------------------------------------------------------ consumer
    @property
    def silent_s(self) -> float:
        """Seconds since the last frame arrived."""
        return (time.monotonic_ns() - self._last_frame_ns) / 1e9

    def take(self, t_trigger_ns: int, nearest: bool = True) -> Shot:
        """The not-yet-inspected frame nearest ``t_trigger_ns`` (a triggered part), or with ``nearest=False`` the
        first frame after it (free-run: the freshest), or a ``missing_frame`` shot saying why. Waits for a frame
        after the trigger, but never longer than ``max_frame_age_ms``."""
        deadline = t_trigger_ns + self.max_age_ns
        with self._cv:
            while not self._stop.is_set():
                fresh = [f for f in self._frames if f.index > self._taken]
                if fresh and fresh[-1].t_ns >= t_trigger_ns:
                    break
                left = deadline - time.monotonic_ns()
                if left <= 0:
                    break
                self._cv.wait(left / 1e9)
            fresh = [f for f in self._frames if f.index > self._taken]
            after = [f for f in fresh if f.t_ns >= t_trigger_ns]
            if nearest or not after:
                best = min(fresh, key=lambda f: abs(f.t_ns - t_trigger_ns)) if fresh else None
            else:
                best = after[0]
            if best is not None and abs(best.t_ns - t_trigger_ns) <= self.max_age_ns:
                self._taken = best.index
        name = str(self.device)
        if best is None or abs(best.t_ns - t_trigger_ns) > self.max_age_ns:
            why = (f"no frame within {self.max_age_ns / 1e6:.0f} ms of the trigger (camera silent for "
                   f"{self.silent_s:.1f} s)")
            return Shot(None, name, "missing_frame", why, time.monotonic_ns())
        try:
            return Shot(to_rgb(best.image, source=name, bgr=True), f"{name}#{best.index}", None, "", best.t_ns)
        except ImageError as exc:
            return Shot(None, name, "wrong_frame", str(exc), best.t_ns)
