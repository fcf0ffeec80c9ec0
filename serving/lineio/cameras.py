"""Replay cameras: a folder of images or a video file, one frame per trigger (demos, tests, benchmarks).

Live sources (camera index, RTSP/HTTP stream) are :class:`serving.lineio.live_camera.LiveCamera`.

>>> ReplayCamera("data/elpv/test").take(0).name   # doctest: +SKIP
'defect/cell0001.png'
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from serving.errors import ImageError
from serving.images import IMAGE_SUFFIXES, read_image, to_rgb
from serving.lineio.frames import EndOfStream, Shot


class ReplayCamera:
    """Images from a folder (sorted, recursive) or frames from a video file, in order."""

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

    def start(self) -> "ReplayCamera":
        """Nothing to start: frames are read on demand."""
        return self

    def stop(self) -> None:
        """Nothing to stop."""

    def take(self, t_trigger_ns: int, nearest: bool = True) -> Shot:
        """The next frame (raises :class:`EndOfStream` at the end unless looping); a replay has no timing."""
        if self.video is not None:
            ok, frame = self.video.read()
            if not ok:
                if not self.loop:
                    raise EndOfStream
                self.video.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self.video.read()
            self.i += 1
            return Shot(to_rgb(frame, bgr=True), f"{self.path.name}#{self.i}", None, "", time.monotonic_ns())
        if self.i >= len(self.files):
            if not self.loop:
                raise EndOfStream
            self.i = 0
        p = self.files[self.i]
        self.i += 1
        name = str(p.relative_to(self.path))
        try:
            return Shot(read_image(p), name, None, "", time.monotonic_ns())
        except ImageError as exc:
            return Shot(None, name, "corrupt_frame", str(exc), time.monotonic_ns())
