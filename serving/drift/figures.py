"""What a part looks like, beyond its anomaly score: lighting, colour balance and focus of its ROI crop.

Computed on the engine-resolution crop (the same pixels the model sees), in numpy and OpenCV, in well
under a millisecond; enrollment computes the same figures for its normals, with this same function.

>>> import numpy as np
>>> f = part_figures(np.full((8, 8, 3), 128, np.uint8))
>>> f.luminance, f.color_balance, f.sharpness
(128.0, 0.0, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PartFigures:
    """Mean luminance (0-255), colour balance ((R - B) / (R + G + B), 0 for grey) and sharpness
    (variance of the Laplacian of the luminance scaled to a mean of 128: brightness-free, so a lighting
    drop reads as lighting, not as defocus)."""

    luminance: float
    color_balance: float
    sharpness: float


def part_figures(crop_rgb: np.ndarray) -> PartFigures:
    """The figures of one uint8 RGB crop."""
    rgb = crop_rgb.reshape(-1, 3).astype(np.float32)
    r, g, b = rgb.mean(0)
    lum = float(0.299 * r + 0.587 * g + 0.114 * b)
    grey = cv2.cvtColor(np.ascontiguousarray(crop_rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey * (128.0 / max(lum, 1.0)), cv2.CV_32F)
    return PartFigures(luminance=round(lum, 4),
                       color_balance=round(float((r - b) / max(r + g + b, 1e-6)), 6),
                       sharpness=round(float(lap.var()), 4))
