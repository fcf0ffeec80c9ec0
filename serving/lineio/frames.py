"""What a camera hands the station: one part's frame with its sequence number and times."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True)
class Shot:
    """What a camera returns for one trigger: the image (RGB) or why there is none, and when it was captured."""

    image: np.ndarray | None
    name: str
    error: str | None
    detail: str
    t_capture_ns: int


@dataclass(frozen=True)
class Tick:
    """One trigger: its time (monotonic ns); ``lost`` says why a trigger's part cannot be seen (e.g. missed)."""

    t_ns: int
    lost: str | None = None


class EndOfStream(Exception):
    """The replay has no more frames."""
