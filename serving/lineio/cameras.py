"""Cameras: replay (a folder or video) and OpenCV devices (index, RTSP/HTTP URL, file).

A camera's ``grab()`` returns ``(image RGB or None, name, error kind, detail)``; a camera
that disconnects is retried with backoff and raises an alarm, and the station carries on.

>>> ReplayCamera("data/elpv/test").grab()[1]   # doctest: +SKIP
'defect/cell0001.png'
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from serving.alarms import Alarms
from serving.images import IMAGE_SUFFIXES, read_image, to_rgb
from serving.errors import ImageError
from serving.lineio.frames import EndOfStream


class ReplayCamera:
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


class OpenCVCamera:
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
