"""The station's stability monitor: a rolling window of parts, the index after each, an alarm with hysteresis.

>>> m = StabilityMonitor(baseline, StabilityConfig())   # doctest: +SKIP
>>> m.add(score, embedding, figures); m.report.index    # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from serving.drift.baseline import Baseline
from serving.drift.figures import PartFigures
from serving.drift.stability import StabilityConfig, StabilityReport, Window, stability


class StabilityMonitor:
    """Keeps the last ``window`` parts' figures; ``on_alert(True/False, report)`` fires on crossing the levels."""

    def __init__(self, baseline: Baseline | None, cfg: StabilityConfig,
                 on_alert: Callable[[bool, StabilityReport], None] | None = None) -> None:
        self.cfg, self.on_alert = cfg, on_alert
        self._lock = threading.Lock()
        self.reset(baseline)

    def reset(self, baseline: Baseline | None) -> None:
        """Start over against a new baseline (a new bundle was loaded)."""
        with self._lock:
            self.baseline = baseline
            self._parts: deque[tuple] = deque(maxlen=self.cfg.window)
            self._false_alarms: deque[int] = deque()  # part counters at which an operator said "false alarm"
            self._count = 0
            self.alert = False
            self.report = StabilityReport(100.0, {}, None, 0)

    def add(self, score: float | None, embedding, figures: PartFigures | None) -> StabilityReport:
        """One inspected part (score None: the inspection failed; it is not a sample of normal)."""
        with self._lock:
            self._count += 1
            if score is not None:
                self._parts.append((score, embedding, figures))
            return self._update()

    def false_alarm(self) -> StabilityReport:
        """An operator disposed a rejected part as a false alarm."""
        with self._lock:
            self._false_alarms.append(self._count)
            return self._update()

    def _update(self) -> StabilityReport:
        if self.baseline is None:
            return self.report
        while self._false_alarms and self._false_alarms[0] <= self._count - self.cfg.window:
            self._false_alarms.popleft()
        parts = list(self._parts)
        figs = [f for _, _, f in parts if f is not None]
        w = Window(scores=[s for s, _, _ in parts], embeddings=[list(e) for _, e, _ in parts if e is not None],
                   luminance=[f.luminance for f in figs], color_balance=[f.color_balance for f in figs],
                   sharpness=[f.sharpness for f in figs], parts=len(parts), false_alarms=len(self._false_alarms))
        self.report = stability(w, self.baseline, self.cfg)
        crossed = None
        if not self.alert and self.report.index < self.cfg.alert_below:
            self.alert, crossed = True, True
        elif self.alert and self.report.index > self.cfg.clear_above:
            self.alert, crossed = False, False
        if crossed is not None and self.on_alert is not None:
            self.on_alert(crossed, self.report)
        return self.report
