"""The capture thread: trigger -> timestamp -> grab -> :class:`Frame`, into a bounded queue.

A full queue drops the oldest frame's image and counts it; the part itself is not lost: it
still gets a (fail-safe) verdict.

>>> src = FrameSource(ReplayCamera("data/elpv/test"), FreeRunTrigger(10.0))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from serving.lineio.frames import EndOfStream, Frame
from serving.lineio.triggers import FreeRunTrigger

log = logging.getLogger("lineguard.capture")


class FrameSource:
    """Capture thread + bounded queue: trigger -> timestamp -> grab -> Frame."""

    def __init__(self, camera, trigger, queue_size: int = 4, max_frames: int | None = None) -> None:
        self.camera, self.trigger = camera, trigger
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
        return self.trigger.late if isinstance(self.trigger, FreeRunTrigger) else 0

    def start(self) -> "FrameSource":
        """Start capturing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop capturing (the consumer then sees end of stream)."""
        self._stop.set()
        if hasattr(self.camera, "stop"):
            self.camera.stop()

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
                    img, name, err, detail = self.camera.grab()
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
