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


class EndOfStream(Exception):
    """The replay has no more frames."""
