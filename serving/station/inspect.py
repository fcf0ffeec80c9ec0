"""One part through engine and gate: the single definition of a verdict.

The station, ``lineguard-station replay`` and ``lineguard evaluate`` all call :func:`inspect`,
so a part gets the same verdict -- score, minimum area, persistence, SOP rules, fail-safe --
wherever it is judged.

>>> insp = inspect(engine, rules, image)        # doctest: +SKIP
>>> insp.decision.verdict, insp.decision.rule   # doctest: +SKIP
('FAIL', 'anomaly')
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

from serving.engine.anomaly import AnomalyEngine, AnomalyResult
from serving.drift.figures import PartFigures, part_figures
from serving.engine.preprocess import anomaly_area
from serving.errors import ImageError, RoiError
from serving.engine.detector import DetectorEngine
from serving.gate import Decision, GateInput, GateRules, decide
from serving.gate.rules import Detection


@dataclass
class Inspection:
    """What engine and gate made of one part."""

    decision: Decision
    score: float | None = None
    area_px: float | None = None
    result: AnomalyResult | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    detections: tuple[Detection, ...] = ()

    @functools.cached_property
    def figures(self) -> PartFigures | None:
        """Lighting, colour balance and focus of the part's ROI crop (the drift figures), computed at the first read:
        they decide nothing, so the station reads them after the actuator has the verdict (~1 ms off every part's
        trigger -> actuation)."""
        if self.result is None or self.result.crop is None:
            return None
        return part_figures(self.result.crop)


def _ms_since(t_ns: int) -> float:
    return (time.monotonic_ns() - t_ns) / 1e6


def inspect(engine: AnomalyEngine, rules: GateRules, image: np.ndarray | None, *, history: tuple[bool, ...] = (),
            source: str = "image", error: str | None = None, detail: str = "",
            t_trigger_ns: int | None = None, detector: DetectorEngine | None = None) -> Inspection:
    """Score ``image`` and decide; any failure becomes a fail-safe verdict with its reason, never an exception.

    ``rules`` must carry the thresholds (``rules.with_calibration(...)``); ``history`` holds the
    anomalous flags of the previous parts (N-of-M persistence); with ``t_trigger_ns`` a decision
    later than ``rules.deadline_ms`` after the trigger fails safe as ``deadline_missed``.
    """
    lat: dict[str, float] = {}
    score = area = result = None
    detections: tuple[Detection, ...] = ()
    if error is None and image is None:
        error, detail = "missing_frame", detail or "no image"
    if error is None:
        try:
            t = time.monotonic_ns()
            crop, x = engine.preprocess(image, source=source)
            lat["preprocess"] = _ms_since(t)
            t = time.monotonic_ns()
            outputs = engine.forward(x[None])
            lat["inference"] = _ms_since(t)
            result = engine.postprocess(outputs, [crop])[0]
            roi = engine.roi
            roi_px = roi.w * roi.h if roi else image.shape[0] * image.shape[1]
            score, area = result.score, anomaly_area(result.anomaly_map, rules.pixel_threshold, roi_px)
        except (ImageError, RoiError) as exc:
            error, detail, result = "wrong_frame", str(exc), None
        except Exception as exc:  # noqa: BLE001 - any engine fault fails safe, never crashes the caller
            error, detail, score, result = "engine_error", f"{type(exc).__name__}: {exc}", None, None
    if error is None and detector is not None:
        try:
            t = time.monotonic_ns()
            detections = tuple(detector.infer(image, source=source))
            lat["detector"] = _ms_since(t)
        except Exception as exc:  # noqa: BLE001 - fails safe too, but the record keeps the anomaly score
            error, detail = "engine_error", f"detector: {type(exc).__name__}: {exc}"
    if error is None and t_trigger_ns is not None and _ms_since(t_trigger_ns) > rules.deadline_ms:
        error, detail = "deadline_missed", f"{_ms_since(t_trigger_ns):.0f} ms > {rules.deadline_ms:g} ms"
    t = time.monotonic_ns()
    decision = decide(GateInput(score=score, area_px=area, detections=detections, history=history, error=error,
                                error_detail=detail), rules)
    lat["gate"] = _ms_since(t)
    return Inspection(decision, score, area, result, lat, detections)
