"""Which parts an operator should look at: borderline scores and novel-looking parts (uncertainty sampling).

- **Borderline**: the score lies in the calibrated uncertainty band around the image threshold,
  ``[thr - d, thr + d]`` with ``d = thr - p95``, where ``p95`` is the 95th percentile of the enrolled
  normals' unseen scores: as far above the threshold as the upper normals lie below it. Nearest first.
- **Novel**: the part's fingerprint is far from every enrolled normal *and* every part already reviewed
  (distance to the nearest, in baseline spreads); farthest first, from ``NOVEL_MIN`` spreads. A part
  like one an operator already judged is not asked about again. Bundles without fingerprints (schema 1)
  fall back to the highest scores.

>>> band(10.0, 8.0)
(8.0, 12.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.evidence.record import InspectionRecord

NOVEL_MIN = 0.5  #: spreads from the nearest known part before a part counts as novel


def band(threshold: float, normal_p95: float) -> tuple[float, float]:
    """The uncertainty band around the threshold."""
    d = max(threshold - normal_p95, 0.05 * threshold)
    return threshold - d, threshold + d


@dataclass
class Suspect:
    """One part picked for review, and why."""

    record: InspectionRecord
    kind: str
    how: float  #: borderline: distance to the threshold in band half-widths; novel: spreads from the nearest known


def pick(candidates: list[InspectionRecord], reviewed: list[InspectionRecord], threshold: float, normal_p95: float,
         known: np.ndarray | None, spread: float, size: int) -> list[Suspect]:
    """Up to 3 borderline parts, then the most novel, ``size`` in all, each part once."""
    lo, hi = band(threshold, normal_p95)
    half = (hi - lo) / 2
    inside = [r for r in candidates if r.score is not None and lo <= r.score <= hi]
    picks = [Suspect(r, "borderline", abs(r.score - threshold) / half)
             for r in sorted(inside, key=lambda r: abs(r.score - threshold))[:3]]
    chosen = {s.record.id for s in picks}
    rest = [r for r in candidates if r.id not in chosen]
    seen = [np.asarray(r.embedding, np.float32) for r in reviewed if r.embedding]
    refs = [known] if known is not None and known.size else []
    if seen:
        refs.append(np.stack(seen))
    with_emb = [r for r in rest if r.embedding]
    if refs and with_emb and spread > 0:
        ref = np.concatenate(refs)
        emb = np.asarray([r.embedding for r in with_emb], np.float32)
        d2 = (emb * emb).sum(1)[:, None] - 2 * emb @ ref.T + (ref * ref).sum(1)[None]
        novelty = np.sqrt(np.maximum(d2.min(1), 0)) / spread
        ranked = [Suspect(r, "novel", float(n)) for n, r in sorted(zip(novelty, with_emb), key=lambda t: -t[0])
                  if n >= NOVEL_MIN]
    else:
        ranked = [Suspect(r, "novel", 0.0) for r in sorted(rest, key=lambda r: -(r.score or 0))]
    return (picks + ranked)[:size]
