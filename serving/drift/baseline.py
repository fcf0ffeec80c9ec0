"""The enrollment baseline a station measures drift against, stored in the bundle's manifest.

>>> FigureStats.of([1.0, 2.0, 3.0]).p50
2.0
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from serving.strict import StrictModel


class FigureStats(StrictModel):
    """Distribution of one per-part figure over the enrolled normals."""

    n: int
    mean: float
    std: float
    p05: float
    p50: float
    p95: float

    @classmethod
    def of(cls, values) -> "FigureStats":
        """The statistics of a sample."""
        v = np.asarray(values, np.float64)
        q = np.quantile(v, [0.05, 0.5, 0.95])
        return cls(n=int(v.size), mean=float(v.mean()), std=float(v.std()), p05=float(q[0]), p50=float(q[1]),
                   p95=float(q[2]))


class Baseline(StrictModel):
    """What normal looked like at enrollment: scores, fingerprint, lighting, focus, and the expected FRR."""

    score: FigureStats = Field(description="unseen normal anomaly scores")
    embedding_dims: int = Field(ge=0, description="length of the part fingerprint (0: bundle without one)")
    embedding_centroid: list[float]
    embedding_spread: float = Field(ge=0, description="RMS distance of the normals' fingerprints to the centroid")
    luminance: FigureStats
    color_balance: FigureStats
    sharpness: FigureStats
    frr_expected: float
    frr_interval: tuple[float, float]
