"""The capture thread: trigger -> timestamp -> the camera's frame for it -> :class:`Frame`, into a bounded queue.

When every trigger is a part (PLC, HTTP or GPIO triggers; replays) every part gets exactly one
verdict: a trigger with no fresh frame becomes a ``missing_frame`` part (fail-safe), and a full
queue drops the oldest *image*, never the part. A live camera in free-run has no parts, only
moments: a moment without a fresh frame, or dropped because inspection fell behind, is *unseen*
-- counted, alarmed, and handed to ``on_unseen`` (the station stops the line if configured so).

>>> src = FrameSource(ReplayCamera("data/elpv/test"), FreeRunTrigger(10.0))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from serving.lineio.frames import EndOfStream, Frame, Shot
from serving.lineio.triggers import FreeRunTrigger

log = logging.getLogger("lineguard.capture")


class FrameSource:
    """Capture thread + bounded queue: trigger -> timestamp -> grab -> Frame."""

    def __init__(self, camera, trigger, queue_size: int = 4, max_frames: int | None = None, *,
                 every_trigger_is_a_part: bool = True, first_seq: int = 1,
                 on_unseen: Callable[[str], None] | None = None) -> None:
        self.camera, self.trigger = camera, trigger
        self.q: queue.Queue[Frame | None] = queue.Queue(maxsize=queue_size)
        self.max_frames = max_frames
        self.parts = every_trigger_is_a_part
        self.on_unseen = on_unseen
        self.dropped = 0
        self.unseen = 0
        self.missed: list[Frame] = []
        self._missed_lock = threading.RLock()
        self.seq = first_seq - 1
        self._first = first_seq
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    @property
    def late(self) -> int:
        """Captures that started late (free-run pacing could not keep up)."""
        return self.trigger.late if isinstance(self.trigger, FreeRunTrigger) else 0

    def start(self) -> "FrameSource":
        """Start the camera and the capture thread."""
        self.camera.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop capturing (the consumer then sees end of stream)."""
        self._stop.set()
        self.camera.stop()

    def _unseen(self, why: str) -> None:
        self.unseen += 1
        if self.on_unseen is not None:
            self.on_unseen(why)

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
                if old is not None and not self.parts:
                    self.dropped += 1
                    self._unseen("inspection fell behind the camera")
                elif old is not None:
                    # the image is dropped, the part is not: it still gets a (fail-safe) verdict
                    self.dropped += 1
                    with self._missed_lock:
                        self.missed.append(Frame(old.seq, old.t_trigger_ns, old.t_capture_ns, None, old.name,
                                                 "missing_frame", "dropped: inspection fell behind"))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.seq - self._first + 1 >= self.max_frames:
                    break
                tick = self.trigger.wait(self._stop)
                if tick is None:
                    break
                if tick.lost:
                    shot = Shot(None, "trigger", "missing_frame", tick.lost, time.monotonic_ns())
                else:
                    try:
                        shot = self.camera.take(tick.t_ns, nearest=self.parts)
                    except EndOfStream:
                        break
                    except Exception as exc:  # noqa: BLE001 - the part was triggered: it gets a fail-safe verdict
                        shot = Shot(None, "capture", "missing_frame", f"{type(exc).__name__}: {exc}", time.monotonic_ns())
                if not self.parts and shot.error == "missing_frame":
                    self._unseen(shot.detail)  # free-run: no part was asked for, none is invented
                    continue
                self.seq += 1
                self._put(Frame(self.seq, tick.t_ns, shot.t_capture_ns, shot.image, shot.name, shot.error, shot.detail))
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
