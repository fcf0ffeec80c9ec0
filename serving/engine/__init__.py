"""The engine room: bundles, pre/post-processing and backends. Knows no PLC, no storage, no web."""

from serving.engine.anomaly import AnomalyEngine, AnomalyResult
from serving.engine.bundle import Bundle, load_bundle

__all__ = ["AnomalyEngine", "AnomalyResult", "Bundle", "load_bundle"]
