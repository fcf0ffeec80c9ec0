"""The Stability Index: one number, 0 to 100 (100 = as at enrollment), and the component that moves it.

A pure function of a window of recent parts and the bundle's enrollment baseline. Each component turns
a deviation into a *severity* ``s`` (0 = as at enrollment, 1 = at its tolerance) and a score
``100 * 2**(-s**2)`` (s = 1 gives 50, the default alert level); the index is the lowest component
score, so it can never rise while any component worsens and the others stay put. Components:

- ``score``: rolling p95 of the anomaly scores against the baseline's, ``s = max(0, r - 1) / score_tolerance``;
- ``feature``: distance of the window's fingerprint centroid from the baseline centroid, in baseline
  spreads, ``s = d / feature_tolerance``;
- ``false_rejects``: operators' false-alarm overrides in the window against the calibrated false-reject
  rate, by a one-sided binomial test: ``s = log10(0.05 / p) / log10(0.05 / frr_alpha)`` (0 while p >= 0.05);
- ``lighting``: window mean luminance (and colour balance) against the baseline, in baseline standard
  deviations, ``s = z / lighting_tolerance``;
- ``focus``: window median sharpness against the baseline median, ``s = |ln r| / ln(1 + focus_tolerance)``.

>>> from serving.drift.baseline import Baseline, FigureStats
>>> fs = FigureStats(n=50, mean=1.0, std=0.1, p05=0.85, p50=1.0, p95=1.2)
>>> b = Baseline(score=fs, embedding_dims=0, embedding_centroid=[], embedding_spread=0.0, luminance=fs,
...              color_balance=fs, sharpness=fs, frr_expected=0.01, frr_interval=(0.002, 0.03))
>>> w = Window(scores=[1.0] * 50, embeddings=[], luminance=[1.0] * 50, color_balance=[1.0] * 50,
...            sharpness=[1.0] * 50, parts=50, false_alarms=0)
>>> round(stability(w, b, StabilityConfig()).index)
100
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from serving.drift.baseline import Baseline
from serving.strict import StrictModel, field_error


class StabilityConfig(StrictModel):
    """How the index is computed and when it alarms (the ``stability:`` section of a station config)."""

    window: int = Field(50, ge=10, le=5000, description="parts the index looks back over")
    min_parts: int = Field(20, ge=5, description="no verdict on stability before this many parts")
    alert_below: float = Field(50.0, gt=0, lt=100, description="the drift alarm is raised below this")
    clear_above: float = Field(65.0, gt=0, le=100, description="... and cleared above this (hysteresis)")
    score_tolerance: float = Field(0.6, gt=0, description="relative rise of the score p95 that counts as drift")
    feature_tolerance: float = Field(0.5, gt=0, description="fingerprint centroid shift, in baseline spreads")
    lighting_tolerance: float = Field(2.0, gt=0, description="shift of mean luminance, in baseline std devs")
    focus_tolerance: float = Field(0.5, gt=0, description="relative change of median sharpness")
    frr_alpha: float = Field(0.001, gt=0, lt=0.05, description="binomial p-value of overrides that counts as drift")

    @model_validator(mode="after")
    def _hysteresis(self) -> "StabilityConfig":
        if self.clear_above <= self.alert_below:
            raise field_error("clear_above", f"clear_above ({self.clear_above:g}) must be above alert_below "
                                             f"({self.alert_below:g}), or the alarm would flicker", self.clear_above)
        if self.min_parts > self.window:
            raise field_error("min_parts", f"min_parts ({self.min_parts}) cannot exceed window ({self.window})",
                              self.min_parts)
        return self


@dataclass(frozen=True)
class Window:
    """The recent parts the index is computed over (figures may be empty lists when a bundle lacks them)."""

    scores: list[float]
    embeddings: list[list[float]]
    luminance: list[float]
    color_balance: list[float]
    sharpness: list[float]
    parts: int
    false_alarms: int


@dataclass(frozen=True)
class Component:
    """One component: its score (0-100), its severity and what it measured."""

    name: str
    score: float
    severity: float
    detail: str


@dataclass(frozen=True)
class StabilityReport:
    """The index, every component, and the one that sets the index."""

    index: float
    components: dict[str, Component]
    moving: str | None
    parts: int
    false_alarms: int = 0


def _score(severity: float) -> float:
    return 100.0 * 2.0 ** (-(severity ** 2))


def binomial_p(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how surprising k false rejects in n parts are at rate p."""
    if k <= 0:
        return 1.0
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))))


def components(w: Window, b: Baseline, cfg: StabilityConfig) -> list[Component]:
    """Every component the window's data allows."""
    out = []
    if w.scores:
        r = float(np.percentile(w.scores, 95)) / max(b.score.p95, 1e-12)
        s = max(0.0, r - 1.0) / cfg.score_tolerance
        out.append(Component("score", _score(s), s, f"score p95 {r:.2f}x the baseline"))
    if w.embeddings and b.embedding_dims and b.embedding_spread > 0:
        d = float(np.linalg.norm(np.mean(w.embeddings, 0) - np.asarray(b.embedding_centroid))) / b.embedding_spread
        s = d / cfg.feature_tolerance
        out.append(Component("feature", _score(s), s, f"fingerprint centroid moved {d:.2f} spreads"))
    p = binomial_p(w.false_alarms, max(w.parts, 1), b.frr_expected)
    s = max(0.0, math.log10(0.05 / p) / math.log10(0.05 / cfg.frr_alpha)) if p < 0.05 else 0.0
    out.append(Component("false_rejects", _score(s), s, f"{w.false_alarms} false alarms in {w.parts} parts, "
                                                          f"expected rate {b.frr_expected:.2%} (p = {p:.2g})"))
    if w.luminance:
        zs = [abs(np.mean(vals) - ref.mean) / max(ref.std, floor) for vals, ref, floor in (
            (w.luminance, b.luminance, 1.0), (w.color_balance, b.color_balance, 0.01))]
        s = max(zs) / cfg.lighting_tolerance
        out.append(Component("lighting", _score(s), s, f"luminance {np.mean(w.luminance):.1f} vs {b.luminance.mean:.1f}"))
    if w.sharpness and b.sharpness.p50 > 0:
        r = max(float(np.median(w.sharpness)), 1e-9) / b.sharpness.p50
        s = abs(math.log(r)) / math.log(1.0 + cfg.focus_tolerance)
        out.append(Component("focus", _score(s), s, f"sharpness {r:.2f}x the baseline"))
    return out


def stability(w: Window, b: Baseline, cfg: StabilityConfig) -> StabilityReport:
    """The Stability Index of a window (100 until ``min_parts`` parts are in it)."""
    if w.parts < cfg.min_parts:
        return StabilityReport(100.0, {}, None, w.parts, w.false_alarms)
    comps = {c.name: c for c in components(w, b, cfg)}
    worst = min(comps.values(), key=lambda c: c.score)
    moving = worst.name if worst.score < 100 - 1e-6 else None
    return StabilityReport(round(worst.score, 2), comps, moving, w.parts, w.false_alarms)
