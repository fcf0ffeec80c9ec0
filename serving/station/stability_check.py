"""The station's drift watch, run over a stream of images in order: where the Stability Index would alarm.

The same :func:`~serving.station.inspect.inspect` and :class:`~serving.drift.monitor.StabilityMonitor`
the station runs, fed part by part, so an engineer can ask of any folder (or a test of any synthetic
stream) "would the station have said its normal moved, and after how many parts?".

>>> run = check_stability(AnomalyEngine.load("models/elpv/bundle"), frames_of(paths))   # doctest: +SKIP
>>> run.first_alert_at, run.alert_component                                               # doctest: +SKIP
(31, 'lighting')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.drift.monitor import StabilityMonitor
from serving.drift.stability import StabilityConfig, StabilityReport
from serving.engine.anomaly import AnomalyEngine
from serving.errors import BundleError, ImageError
from serving.gate import GateRules, History
from serving.images import read_image
from serving.station.inspect import inspect


@dataclass
class StabilityRun:
    """The index after every part, and where (and why) it first alarmed."""

    n: int = 0
    index: list[float] = field(default_factory=list)
    first_alert_at: int | None = None
    alert_component: str | None = None
    alerts: int = 0
    final: StabilityReport | None = None
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The JSON ``lineguard stability`` prints."""
        f = self.final
        return {"n": self.n, "stability_index": f.index if f else None, "min_index": min(self.index, default=None),
                "alert": self.first_alert_at is not None, "first_alert_at": self.first_alert_at,
                "alert_component": self.alert_component, "alerts": self.alerts,
                "components": {k: {"score": round(c.score, 2), "detail": c.detail} for k, c in f.components.items()}
                if f else {}, "unreadable": self.unreadable}


def frames_of(paths: Iterable[Path]) -> Iterator[tuple[str, np.ndarray | None]]:
    """(name, image or None when unreadable) for each path, read lazily."""
    for p in paths:
        try:
            yield str(p), read_image(p)
        except ImageError:
            yield str(p), None


def check_stability(engine: AnomalyEngine, frames: Iterable[tuple[str, np.ndarray | None]],
                    cfg: StabilityConfig | None = None, rules: GateRules | None = None) -> StabilityRun:
    """Feed ``frames`` in order through inspection and the stability monitor; report every alarm."""
    m = engine.bundle.manifest
    if m.baseline is None:
        raise BundleError(f"bundle {m.bundle_version} (schema {m.schema_version}) has no enrollment baseline, so "
                          "there is no Stability Index to check; re-export it with this lineguard")
    rules = (rules or GateRules()).with_calibration(engine.thresholds.image, engine.thresholds.pixel)
    run = StabilityRun()
    raised = []
    monitor = StabilityMonitor(m.baseline, cfg or StabilityConfig(), on_alert=lambda up, r: raised.append((up, r)))
    history = History(rules.persistence_m)
    for i, (name, image) in enumerate(frames):
        insp = inspect(engine, rules, image, history=history.window(), source=name)
        history.push(insp.decision)
        if insp.result is None:
            run.unreadable.append(f"{name}: {insp.decision.reasons[0] if insp.decision.reasons else insp.decision.rule}")
        report = monitor.add(insp.score if insp.result is not None else None,
                             insp.result.embedding if insp.result is not None else None, insp.figures)
        run.index.append(report.index)
        for up, r in raised:
            if up:
                run.alerts += 1
                if run.first_alert_at is None:
                    run.first_alert_at, run.alert_component = i, r.moving
        raised.clear()
        run.n = i + 1
        run.final = report
    return run
