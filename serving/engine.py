"""The station's scoring engine: a verified bundle run by ONNX Runtime or TensorRT.

Imports numpy, opencv and onnxruntime only -- never torch or the training stack.

>>> engine = AnomalyEngine.load("models/elpv/bundle")      # doctest: +SKIP
>>> result = engine.infer(read_image("cell.png"))          # doctest: +SKIP
>>> result.score, result.anomaly_map.shape                 # doctest: +SKIP
(0.91, (256, 256))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.bundle import Bundle, load_bundle
from serving.errors import BundleError
from serving.images import to_rgb
from serving.preprocess import display_crop, heatmap_overlay, normalize, preprocess

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass
class Result:
    """One image's score, anomaly map (engine resolution) and nearest-normal patch indices."""

    score: float
    anomaly_map: np.ndarray
    patch_match: np.ndarray
    crop: np.ndarray | None = None

    def overlay(self, pixel_threshold: float) -> np.ndarray:
        """Heatmap over the ROI crop, uint8 RGB."""
        if self.crop is None:
            raise ValueError("no crop kept for this result; call infer(..., keep_crop=True)")
        return heatmap_overlay(self.crop, self.anomaly_map, pixel_threshold)


class OrtBackend:
    """ONNX Runtime session over the bundle's ``model.onnx``."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = providers or [p for p in PREFERRED_PROVIDERS if p in available]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=wanted)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph on a float32 NCHW batch."""
        return self.session.run(self.output_names, {self.input_name: batch})


class TensorRTBackend:
    """Native TensorRT engine (Jetson / x86 GPU). Import-guarded: needs ``tensorrt`` and ``cuda-python``."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, output_names: list[str]) -> None:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        self.trt, self.cudart = trt, cudart
        logger = trt.Logger(trt.Logger.WARNING)
        with open(engine_path, "rb") as fh:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise BundleError(f"{engine_path}: TensorRT could not deserialize the engine (built for another GPU/version?)")
        self.context = self.engine.create_execution_context()
        self.input_name = self.engine.get_tensor_name(0)
        self.output_names = output_names
        _, self.stream = cudart.cudaStreamCreate()
        self.providers = ["TensorRT"]

    def _check(self, result, what: str):
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise RuntimeError(f"TensorRT/CUDA {what} failed: {err}")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Copy in, execute, copy out (synchronous). Any CUDA error raises: never read unwritten outputs."""
        cudart, trt = self.cudart, self.trt
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if not self.context.set_input_shape(self.input_name, batch.shape):
            raise RuntimeError(f"TensorRT engine does not accept input shape {batch.shape}")
        buffers, outputs = [], []
        try:
            for name in [self.input_name, *self.output_names]:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = trt.nptype(self.engine.get_tensor_dtype(name))
                host = np.ascontiguousarray(batch) if name == self.input_name else np.empty(shape, dtype)
                dev = self._check(cudart.cudaMalloc(host.nbytes), "cudaMalloc")
                buffers.append(dev)
                self.context.set_tensor_address(name, dev)
                if name == self.input_name:
                    self._check(cudart.cudaMemcpyAsync(dev, host.ctypes.data, host.nbytes, h2d, self.stream), "copy in")
                else:
                    outputs.append((dev, host))
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for dev, host in outputs:
                self._check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, d2h, self.stream), "copy out")
            self._check(cudart.cudaStreamSynchronize(self.stream), "stream sync")
        finally:
            for dev in buffers:
                cudart.cudaFree(dev)
        return [host for _, host in outputs]


def tensorrt_available() -> bool:
    """True when the ``tensorrt`` Python package imports."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


class AnomalyEngine:
    """Scores images with a verified anomaly bundle."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int | None = None) -> None:
        self.bundle = bundle
        m = bundle.manifest
        if m.model_kind != "anomaly":
            raise BundleError(f"{bundle.root}: model_kind {m.model_kind!r}, expected 'anomaly'")
        self.spec, self.roi, self.thresholds = m.input, m.roi, m.thresholds
        trt_file = m.tensorrt.file if m.tensorrt.built else None
        if backend in ("auto", "tensorrt") and trt_file and tensorrt_available():
            self.backend = TensorRTBackend(bundle.path(trt_file), m.outputs)
        elif backend == "tensorrt":
            raise BundleError(f"{bundle.root}: backend 'tensorrt' asked for, but the bundle has no engine or tensorrt does not import")
        else:
            self.backend = OrtBackend(bundle.path(m.model_file), threads=threads)

    @classmethod
    def load(cls, root: str | os.PathLike, backend: str = "auto", threads: int | None = None) -> "AnomalyEngine":
        """Verify the bundle at ``root`` and open it."""
        return cls(load_bundle(root), backend=backend, threads=threads)

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use."""
        return list(self.backend.providers)

    def prepare(self, image_rgb: np.ndarray, *, source: str = "image") -> np.ndarray:
        """ROI crop + resize + normalise: the engine's 3xHxW float32 input (gray/RGBA frames are converted)."""
        return preprocess(to_rgb(image_rgb, source=source), self.spec, self.roi, source=source)

    def score_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores [B], maps [B,H,W], patch_match [B,h,w]) for a preprocessed float32 batch."""
        score, amap, match = self.backend.run(np.ascontiguousarray(batch, dtype=np.float32))
        return score.astype(np.float32), amap[:, 0], match

    def warmup(self) -> None:
        """Run one dummy batch so the first real part does not pay for lazy initialisation."""
        self.score_batch(np.zeros((1, 3, self.spec.height, self.spec.width), np.float32))

    def infer(self, image_rgb: np.ndarray, *, source: str = "image", keep_crop: bool = True) -> Result:
        """Score one HxWx3 uint8 RGB image (batch of 1)."""
        crop = display_crop(to_rgb(image_rgb, source=source), self.spec, self.roi, source=source)  # resized once
        score, amap, match = self.score_batch(normalize(crop, self.spec)[None])
        return Result(score=float(score[0]), anomaly_map=amap[0], patch_match=match[0], crop=crop if keep_crop else None)
