"""The anomaly engine: a verified anomaly bundle run by ONNX Runtime or TensorRT.

Imports numpy, opencv and onnxruntime only -- never torch or the training stack.

>>> engine = AnomalyEngine.load("models/elpv/bundle")      # doctest: +SKIP
>>> result = engine.infer(read_image("cell.png"))          # doctest: +SKIP
>>> result.score, result.anomaly_map.shape                 # doctest: +SKIP
(0.91, (224, 224))
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from serving.engine.backends import PREFERRED_PROVIDERS, open_backend, tensorrt_available
from serving.engine.base import InferenceEngine
from serving.engine.signing import Trust
from serving.engine.bundle import Bundle, load_bundle
from serving.engine.explain import Explainer
from serving.engine.search import open_search
from serving.images import to_rgb
from serving.engine.preprocess import display_crop, heatmap_overlay, normalize
from serving.errors import BundleError


@dataclass
class AnomalyResult:
    """One image's score, anomaly map (engine resolution), nearest-normal patch indices and fingerprint."""

    score: float
    anomaly_map: np.ndarray
    patch_match: np.ndarray
    crop: np.ndarray | None = None
    embedding: np.ndarray | None = None  #: the part's fingerprint (schema 2 bundles), for drift and novelty

    def overlay(self, pixel_threshold: float) -> np.ndarray:
        """Heatmap over the ROI crop, uint8 RGB."""
        if self.crop is None:
            raise ValueError("no crop kept for this result; pass crops to postprocess()")
        return heatmap_overlay(self.crop, self.anomaly_map, pixel_threshold)


def cpu_only(backend: str, engine_built: bool) -> bool:
    """True when ``backend`` would run the graph on a CPU: no TensorRT engine to run, no GPU provider in ONNX
    Runtime. Only then does the search index pay (a GPU runs the exact search's one large GEMM faster)."""
    import onnxruntime as ort

    if backend == "auto" and engine_built and tensorrt_available():
        return False
    return not [p for p in PREFERRED_PROVIDERS if p != "CPUExecutionProvider" and p in ort.get_available_providers()]


class AnomalyEngine(InferenceEngine):
    """Scores images with a verified anomaly bundle.

    ``backend``: ``auto`` (TensorRT where built and importable, else ONNX Runtime on its best provider; on a CPU,
    with the bundle's search index when it has one), ``tensorrt``, ``onnxruntime``, or ``exact`` (ONNX Runtime,
    the whole graph's exact search).
    """

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int | None = None) -> None:
        self.bundle = bundle
        m = bundle.manifest
        if m.model_kind != "anomaly":
            raise BundleError(f"{bundle.root}: model_kind {m.model_kind!r}, expected 'anomaly'")
        self.spec, self.roi, self.thresholds = m.input, m.roi, m.thresholds
        if m.search is not None and backend in ("auto", "onnxruntime") and cpu_only(backend, m.tensorrt.built):
            self.backend = open_search(bundle, threads)
            return
        self.backend = open_backend(bundle.root, m.model_file, m.tensorrt.file if m.tensorrt.built else None,
                                    m.outputs, "onnxruntime" if backend == "exact" else backend, threads,
                                    sha256=m.files[m.model_file].sha256)

    @classmethod
    def load(cls, root: str | os.PathLike, backend: str = "auto", threads: int | None = None,
             trust: "Trust | None" = None) -> "AnomalyEngine":
        """Verify the bundle at ``root`` and open it."""
        return cls(load_bundle(root, trust=trust), backend=backend, threads=threads)

    @functools.cached_property
    def explainer(self) -> Explainer:
        """The bundle's explain files, read at the first use (a FAIL), never on the per-part path."""
        return Explainer.load(self.bundle)

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use."""
        return list(self.backend.providers)

    def preprocess(self, image_rgb: np.ndarray, *, source: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """ROI crop + resize (once) + normalise; gray/RGBA frames are converted, other shapes refused."""
        crop = display_crop(to_rgb(image_rgb, source=source), self.spec, self.roi, source=source)
        return crop, normalize(crop, self.spec)

    def forward(self, batch: np.ndarray) -> list[np.ndarray]:
        """(scores [B], maps [B,1,H,W], patch_match [B,h,w][, fingerprints [B,E]]) straight from the graph."""
        return self.backend.run(np.ascontiguousarray(batch, dtype=np.float32))

    def postprocess(self, outputs: list[np.ndarray], crops: list[np.ndarray] | None = None) -> list[AnomalyResult]:
        """One :class:`AnomalyResult` per image; non-finite scores are refused (the part then fails safe)."""
        scores, maps, match = outputs[:3]
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError("engine returned a non-finite score")
        crops = crops or [None] * len(scores)
        prints = outputs[3] if len(outputs) > 3 and outputs[3].size else [None] * len(scores)
        return [AnomalyResult(float(s), m[0], p, c, e) for s, m, p, c, e in zip(scores, maps, match, crops, prints)]
