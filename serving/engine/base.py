"""The inference contract every engine honours: load -> preprocess -> forward -> postprocess.

anomalib's base inferencer names the same four steps; here they are plain numpy around a
:class:`~serving.engine.backends.Backend`, so the station can time each one and the
pipeline evaluates with exactly the code the station runs.

>>> sorted(InferenceEngine.__abstractmethods__)
['forward', 'load', 'postprocess', 'preprocess']
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from serving.engine.bundle import Bundle


class InferenceEngine(ABC):
    """A verified bundle behind a backend, with its own pre- and post-processing."""

    bundle: Bundle

    @classmethod
    @abstractmethod
    def load(cls, root: str | os.PathLike, backend: str = "auto", threads: int | None = None) -> "InferenceEngine":
        """Verify the bundle at ``root`` and open its graph."""

    @abstractmethod
    def preprocess(self, image_rgb: np.ndarray, *, source: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """(display crop uint8 HxWx3, input tensor float32 3xHxW) for one image."""

    @abstractmethod
    def forward(self, batch: np.ndarray) -> list[np.ndarray]:
        """The graph's raw outputs for a float32 NCHW batch."""

    @abstractmethod
    def postprocess(self, outputs: list[np.ndarray], crops: list[np.ndarray] | None = None) -> list[Any]:
        """One result per image of the batch."""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input."""
        spec = self.bundle.manifest.input
        return 3, spec.height, spec.width

    def infer(self, image_rgb: np.ndarray, *, source: str = "image") -> Any:
        """The four steps for one image (batch of 1)."""
        crop, x = self.preprocess(image_rgb, source=source)
        return self.postprocess(self.forward(x[None]), [crop])[0]

    def warmup(self) -> None:
        """Run one dummy batch so the first real part does not pay for lazy initialisation."""
        self.forward(np.zeros((1, *self.input_shape), np.float32))
