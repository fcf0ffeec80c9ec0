"""Replay cameras: a folder of images or a video file, one frame per trigger (demos, tests, benchmarks).

Live sources (camera index, RTSP/HTTP stream) are :class:`serving.lineio.live_camera.LiveCamera`.

>>> ReplayCamera("data/elpv/test").take(0).name   # doctest: +SKIP
'defect/cell0001.png'
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from serving.errors import ImageError
from serving.images import IMAGE_SUFFIXES, read_image, to_rgb
from serving.lineio.frames import EndOfStream, Shot


class ReplayCamera:
    """Images from a folder (sorted, recursive) or frames from a video file, in order.

    With ``preload_mb`` > 0 a folder's images are decoded once at start (up to that many MiB of pixels), so a
    trigger hands over pixels as a camera does: the capture stage then times no PNG decoding, which on a
    900x900 frame costs more than the scoring.
    """

    def __init__(self, path: str | Path, loop: bool = False, preload_mb: float = 0.0) -> None:
        self.path, self.loop = Path(path), loop
        self.decoded: list[np.ndarray | ImageError] | None = None
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise ImageError(f"{self.path}: no images to replay; check source.path")
            self.video = None
            if preload_mb > 0:
                self.decoded = self._decode_all(preload_mb)
        elif self.path.is_file():
            if preload_mb > 0:
                raise ImageError(f"{self.path}: source.preload_mb applies to a folder of images; a video is decoded "
                                 f"frame by frame (set source.preload_mb: 0)")
            self.files, self.video = [], cv2.VideoCapture(str(self.path))
            if not self.video.isOpened():
                raise ImageError(f"{self.path}: cannot open as a video; check source.path")
        else:
            raise ImageError(f"{self.path}: source.path does not exist")
        self.i = 0

    def _decode_all(self, limit_mb: float) -> list[np.ndarray | ImageError]:
        """Every image decoded once, read-only (a camera hands over pixels, not files); a corrupt file keeps its
        error, so its part is still recorded as a corrupt frame."""
        out: list[np.ndarray | ImageError] = []
        total = 0
        for p in self.files:
            try:
                img = read_image(p)
            except ImageError as exc:
                out.append(exc)
                continue
            total += img.nbytes
            if total > limit_mb * 2**20:
                raise ImageError(f"{self.path}: the decoded images exceed source.preload_mb ({limit_mb:g} MiB) at "
                                 f"{p.name}; raise it, replay fewer images, or set it to 0 to decode per trigger")
            img.flags.writeable = False  # one array serves every loop: nobody may draw on it
            out.append(img)
        return out

    def start(self) -> "ReplayCamera":
        """Nothing to start: frames are read on demand (or were decoded when the camera was made)."""
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
            frame = read_image(p) if self.decoded is None else self.decoded[self.i - 1]
            if isinstance(frame, ImageError):
                raise frame
            return Shot(frame, name, None, "", time.monotonic_ns())
        except ImageError as exc:
            return Shot(None, name, "corrupt_frame", str(exc), time.monotonic_ns())
