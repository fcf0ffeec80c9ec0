"""The smoke test a new anomaly bundle passes before a station switches to it.

The bundle carries thumbnails of the normals it was enrolled on (``explain/normals``). Scored by the
new engine on this station, they must look like the normals its own calibration describes: most
below its threshold, the threshold not far above them, and their median near the calibrated normal
median. A bundle scored with the wrong preprocessing, a threshold far too low or too high, or a
graph that does not match its manifest fails here,
off the line, while the old bundle keeps inspecting.

>>> result = smoke_test(engine)      # doctest: +SKIP
>>> result.ok, result.reason         # doctest: +SKIP
(True, '8 stored normals: median 21.7 (calibration 22.8), 0 above the threshold 32.5')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from serving.engine.preprocess import normalize, resize

MAX_ABOVE = 0.25  #: at most this fraction of the stored normals may score above the bundle's own threshold
MEDIAN_RATIO = (0.5, 2.0)  #: their median, divided by the calibrated normal median, must lie in this range
MAX_HEADROOM = 10.0  #: the threshold may be at most this many times the normals' median (else defects pass)


@dataclass(frozen=True)
class SmokeResult:
    """What the stored normals scored under the new bundle."""

    ok: bool
    reason: str
    scores: list[float]


def stored_normals(engine, n: int = 8) -> list[np.ndarray]:
    """Up to ``n`` of the bundle's normal thumbnails (RGB crops, as enrolled), spread over the set."""
    m = engine.bundle.manifest
    folder = m.explain.get("thumbnails")
    if not folder:
        return []
    files = sorted(p for p in (engine.bundle.root / folder).iterdir() if p.name in _listed(m, folder))
    pick = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(n, len(files)))] if files else []
    out = []
    for p in pick:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            out.append(img[:, :, ::-1])
    return out


def _listed(manifest, folder: str) -> set[str]:
    return {Path(f).name for f in manifest.files if f.startswith(folder)}


def smoke_test(engine, n: int = 8) -> SmokeResult:
    """Score the bundle's stored normals with ``engine``; refuse when they are far off its own calibration."""
    crops = stored_normals(engine, n)
    t = engine.thresholds
    if not crops:
        return SmokeResult(True, "no stored normals in this bundle (explain/normals): smoke test skipped", [])
    s = engine.spec
    batch = np.stack([normalize(resize(c, s.height, s.width), s) for c in crops]).astype(np.float32)
    scores = [float(v) for v in engine.forward(batch)[0]]
    if not np.all(np.isfinite(scores)):
        return SmokeResult(False, "stored normals scored non-finite values", scores)
    median, ref = float(np.median(scores)), t.normal_image_scores.p50
    above = sum(v > t.image for v in scores)
    what = (f"{len(scores)} stored normals: median {median:.4g} (calibration {ref:.4g}), {above} above the "
            f"threshold {t.image:.4g}")
    if above > MAX_ABOVE * len(scores):
        return SmokeResult(False, f"{what}: the bundle would reject its own normals", scores)
    if median > 0 and t.image / median > MAX_HEADROOM:
        return SmokeResult(False, f"{what}: the threshold is {t.image / median:.0f}x its normals' median; "
                                  "defects would pass", scores)
    lo, hi = MEDIAN_RATIO
    if ref > 0 and not lo <= median / ref <= hi:
        return SmokeResult(False, f"{what}: scores are {median / ref:.2f}x its own calibration", scores)
    return SmokeResult(True, what, scores)
