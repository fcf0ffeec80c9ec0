"""The detector engine: a verified YOLO detector bundle, boxes by class, NMS in numpy.

Imports numpy, opencv and onnxruntime only. The graph is the raw YOLO head ([1, 4 + classes, N]:
centre, size and per-class scores in input pixels); letterbox, per-class greedy NMS and the mapping
back to source pixels happen here, so ONNX Runtime and TensorRT see the same tensors and the
pipeline's evaluation runs exactly this code.

>>> engine = DetectorEngine.load("models/bottle/detector")     # doctest: +SKIP
>>> [(d.class_name, round(d.confidence, 2)) for d in engine.infer(read_image("part.png"))]   # doctest: +SKIP
[('contamination', 0.81)]
>>> [(c, round(s, 2), b) for c, s, b in nms(np.array([[10, 11], [10, 10], [4, 4], [4, 4], [0.9, 0.2], [0.1, 0.8]]),
...                                            ["a", "b"], 0.25, 0.7)]
[('a', 0.9, (8.0, 8.0, 4.0, 4.0)), ('b', 0.8, (9.0, 8.0, 4.0, 4.0))]
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from serving.engine.backends import open_backend
from serving.engine.base import InferenceEngine
from serving.engine.signing import Trust
from serving.engine.bundle import Bundle, load_bundle
from serving.engine.preprocess import crop_roi, normalize
from serving.errors import BundleError
from serving.gate.rules import Detection
from serving.images import to_rgb

PAD_VALUE = 114  #: ultralytics' letterbox grey


def letterbox(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad with grey: (image, scale, (pad_x, pad_y))."""
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    nh, nw = round(h * scale), round(w * scale)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    px, py = (width - nw) // 2, (height - nh) // 2
    out = np.full((height, width, 3), PAD_VALUE, np.uint8)
    out[py : py + nh, px : px + nw] = resized
    return out, scale, (px, py)


def nms(raw: np.ndarray, classes: list[str], conf: float, iou: float) -> list[tuple[str, float, tuple]]:
    """Per-class greedy NMS of one raw YOLO output [4 + C, N] -> [(class, confidence, (x, y, w, h) input px)]."""
    p = np.asarray(raw, np.float32).T
    cls, score = p[:, 4:].argmax(1), p[:, 4:].max(1)
    keep = score > conf
    p, cls, score = p[keep], cls[keep], score[keep]
    boxes = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)
    out = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        idx = idx[np.argsort(-score[idx])]
        while len(idx):
            i, rest = idx[0], idx[1:]
            b = boxes[i]
            out.append((classes[int(c)], float(score[i]), (float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]))))
            iw = np.clip(np.minimum(b[2], boxes[rest, 2]) - np.maximum(b[0], boxes[rest, 0]), 0, None)
            ih = np.clip(np.minimum(b[3], boxes[rest, 3]) - np.maximum(b[1], boxes[rest, 1]), 0, None)
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (boxes[rest, 2] - boxes[rest, 0]) * (boxes[rest, 3] - boxes[rest, 1]) - inter
            idx = rest[inter / np.maximum(union, 1e-9) <= iou]
    return sorted(out, key=lambda d: -d[1])


class DetectorEngine(InferenceEngine):
    """Finds defect classes with a verified detector bundle."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int | None = None) -> None:
        self.bundle = bundle
        m = bundle.manifest
        if m.model_kind != "detector":
            raise BundleError(f"{bundle.root}: model_kind {m.model_kind!r}, expected 'detector'")
        self.spec, self.roi, self.classes, self.det = m.input, m.roi, list(m.class_names), m.detector
        self.report_from(self.det.confidence)
        self.backend = open_backend(bundle.root, m.model_file, m.tensorrt.file if m.tensorrt.built else None,
                                    m.outputs, backend, threads, sha256=m.files[m.model_file].sha256)
        self._geometry: list[tuple[float, float, tuple[int, int], tuple[int, int]]] = []

    def report_from(self, limits: dict[str, float]) -> None:
        """Report each class from the lower of the bundle's confidence and ``limits`` (the gate's
        ``class_confidence``): a station that lowers a class's limit must see the boxes above it."""
        own, floor = self.det.confidence, min(self.det.confidence.values(), default=0.25)
        self.report = {c: min(own.get(c, floor), limits.get(c, 1.0)) for c in self.classes}
        self.min_conf = min(self.report.values(), default=0.25)

    @classmethod
    def load(cls, root: str | os.PathLike, backend: str = "auto", threads: int | None = None,
             trust: "Trust | None" = None) -> "DetectorEngine":
        """Verify the detector bundle at ``root`` and open it."""
        return cls(load_bundle(root, trust=trust), backend=backend, threads=threads)

    def preprocess(self, image_rgb: np.ndarray, *, source: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """ROI crop, letterbox to the input size, scale to [0, 1]; remembers how to map boxes back."""
        crop = crop_roi(to_rgb(image_rgb, source=source), self.roi, source=source)
        if self.det.letterbox:
            boxed, scale, pad = letterbox(crop, self.spec.height, self.spec.width)
            sx = sy = scale
        else:
            boxed = cv2.resize(crop, (self.spec.width, self.spec.height), interpolation=cv2.INTER_LINEAR)
            sx, sy, pad = self.spec.width / crop.shape[1], self.spec.height / crop.shape[0], (0, 0)
        self._geometry = [(sx, sy, pad, crop.shape[:2])]
        return boxed, normalize(boxed, self.spec)

    def forward(self, batch: np.ndarray) -> list[np.ndarray]:
        """The raw head output [B, 4 + classes, N]."""
        return self.backend.run(np.ascontiguousarray(batch, dtype=np.float32))

    def postprocess(self, outputs: list[np.ndarray], crops: list[np.ndarray] | None = None) -> list[list[Detection]]:
        """Per image: detections at or above the lowest deployed confidence, boxes in source pixels."""
        raw = outputs[0]
        size = (self.spec.height, self.spec.width)
        geometry = self._geometry if len(self._geometry) == len(raw) else [(1.0, 1.0, (0, 0), size)] * len(raw)
        ox, oy = (self.roi.x, self.roi.y) if self.roi else (0, 0)
        results = []
        if raw.shape[1] != 4 + len(self.classes):
            raise BundleError(f"{self.bundle.root}: the graph scores {raw.shape[1] - 4} classes, the manifest names "
                              f"{len(self.classes)} ({self.classes}); re-export the detector")
        for r, (sx, sy, (px, py), (ch, cw)) in zip(raw, geometry):
            dets = []
            for name, conf, (x, y, w, h) in nms(r, self.classes, self.min_conf, self.det.iou):
                if conf < self.report.get(name, self.min_conf):
                    continue
                # back to the crop's pixels, clipped to it (as ultralytics clips), then to the source image's
                x0, y0 = np.clip((x - px) / sx, 0, cw), np.clip((y - py) / sy, 0, ch)
                x1, y1 = np.clip((x + w - px) / sx, 0, cw), np.clip((y + h - py) / sy, 0, ch)
                if x1 - x0 < 1 or y1 - y0 < 1:
                    continue
                dets.append(Detection(class_name=name, confidence=round(min(conf, 1.0), 4),
                                      box=(round(float(x0) + ox, 1), round(float(y0) + oy, 1),
                                           round(float(x1 - x0), 1), round(float(y1 - y0), 1))))
            results.append(dets)
        return results
