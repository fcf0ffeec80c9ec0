"""Execution backends: ONNX Runtime (everywhere) and TensorRT (Jetson / NVIDIA GPUs, import-guarded).

Every backend honours one contract, :class:`Backend`: it is *loaded* from a graph file once,
then *runs* a float32 NCHW batch and returns the graph's outputs in the manifest's order.
Pre- and post-processing are not a backend's business: they live in the engines, in numpy,
so ONNX Runtime and TensorRT see the same tensors.

>>> issubclass(OrtBackend, Backend)
True
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
import platform
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serving.engine.bundle import sha256_file
from serving.errors import BundleError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


log = logging.getLogger("lineguard.engine")


class Backend(ABC):
    """Runs a graph: ``run(batch) -> [output, ...]`` in the order of ``output_names``."""

    name: str
    providers: list[str]
    output_names: list[str]

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph on a contiguous float32 NCHW batch."""


def ort_cache_dir() -> Path | None:
    """Where optimised graphs are cached: ``$LINEGUARD_ORT_CACHE`` (``off`` disables), else
    ``$XDG_CACHE_HOME/lineguard/ort`` (``~/.cache/lineguard/ort``)."""
    v = os.environ.get("LINEGUARD_ORT_CACHE")
    if v == "off":
        return None
    return Path(v) if v else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lineguard" / "ort"


def _private(path: Path) -> bool:
    """True when only this user can change ``path``: a cached graph runs unsigned, so nobody else may plant one."""
    if os.name != "posix":
        return True
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


#: optimised graphs kept in the cache (most recently used first): a station's stored bundles and a few more
ORT_CACHE_KEEP = 8


def _prune_cache(cache: Path, keep: int = ORT_CACHE_KEEP) -> None:
    """Delete all but the ``keep`` most recently used cached graphs (with their hash files): every deployed
    version adds one, and a station's disk is for its evidence."""
    graphs = sorted((p for p in cache.glob("*.onnx") if not p.name.startswith(".")),  # not a writer's temp file
                    key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in graphs[keep:]:
        for f in (old, old.with_suffix(".json")):
            try:
                f.unlink(missing_ok=True)
            except OSError:  # in use elsewhere or read-only: the next prune tries again
                pass


def _machine_key() -> str:
    """What a fully optimised CPU graph depends on besides the model: ORT's version and the CPU's features."""
    import onnxruntime as ort

    flags = ""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    return hashlib.sha256(f"{ort.__version__}|{platform.machine()}|{flags}".encode()).hexdigest()[:16]


class OrtBackend(Backend):
    """ONNX Runtime session over an ``.onnx`` file, on the best provider available.

    With the graph's ``sha256`` (from the verified manifest), the fully optimised graph is cached per machine
    (:func:`ort_cache_dir`): the next load skips ORT's graph optimisation, the larger part of a cold start. A
    cached graph is used only if its own hash, recorded beside it, still matches, and only from a folder and
    files no other user can write (the cached graph is not covered by the bundle's signature); anything else
    rebuilds it.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, providers: list[str] | None = None, threads: int | None = None,
                 sha256: str | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = providers or [p for p in PREFERRED_PROVIDERS if p in available]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:  # numpy's BLAS threads run next: ORT's must not busy-wait on the same cores
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path, fresh = Path(onnx_path), None
        cache = ort_cache_dir() if sha256 and wanted == ["CPUExecutionProvider"] else None
        if cache is not None:
            try:
                cache.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not _private(cache):
                    log.warning("%s: writable by other users, so not used as the graph cache (a planted graph would "
                                "run unsigned); `chmod 700` it or set LINEGUARD_ORT_CACHE", cache)
                    cache = None
            except OSError:
                cache = None
        if cache is not None:
            cached = cache / f"{sha256[:32]}-{_machine_key()}.onnx"
            side = cached.with_suffix(".json")
            try:
                if _private(cached) and _private(side) and json.loads(side.read_text())["sha256"] == sha256_file(cached):
                    path = cached
                    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                    os.utime(cached)  # most recently used: the last to be pruned
            except (OSError, ValueError, KeyError):
                pass
            if path != cached:
                try:
                    fresh = cached.with_name(f".{cached.stem}.{os.getpid()}.tmp.onnx")
                    opts.optimized_model_filepath = str(fresh)
                    opts.log_severity_level = 3  # not the "hardware-specific graph" warning: it is kept per machine
                except OSError:  # a read-only disk: no cache, the same session
                    fresh = None
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        if fresh is not None and fresh.exists():
            try:  # the hash first, then the graph: a reader never sees a graph without its hash
                cached.with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(fresh), "source": sha256}))
                os.replace(fresh, cached)
                _prune_cache(cache)
            except OSError:
                fresh.unlink(missing_ok=True)
        self.cached = path != Path(onnx_path)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph on a float32 NCHW batch."""
        return self.session.run(self.output_names, {self.input_name: batch})


class DeviceBuffers:
    """Device memory per tensor name, allocated once and reused; re-allocated only when a tensor grows.

    ``alloc(nbytes) -> pointer`` and ``free(pointer)`` are the device's allocator (CUDA's for TensorRT).
    """

    def __init__(self, alloc: Callable[[int], int], free: Callable[[int], None]) -> None:
        self._alloc, self._free = alloc, free
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, capacity in bytes)
        self.allocations = 0

    def get(self, name: str, nbytes: int) -> int:
        """A device pointer with room for ``nbytes`` for tensor ``name``."""
        ptr, cap = self._buffers.get(name, (0, -1))
        if nbytes > cap:
            if cap >= 0:
                self._free(ptr)
            ptr, cap = self._alloc(max(nbytes, 1)), nbytes
            self._buffers[name] = (ptr, cap)
            self.allocations += 1
        return ptr

    def release(self) -> None:
        """Free every buffer."""
        for ptr, _ in self._buffers.values():
            self._free(ptr)
        self._buffers.clear()


class TensorRTBackend(Backend):
    """A native TensorRT engine. Import-guarded: needs ``tensorrt`` and ``cuda-python`` (JetPack on Jetson)."""

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
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.buffers = DeviceBuffers(lambda n: self._check(cudart.cudaMalloc(n), "cudaMalloc"), cudart.cudaFree)
        self.providers = ["TensorRT"]

    @staticmethod
    def _check(result, what: str):
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
        host_in = np.ascontiguousarray(batch)
        dev_in = self.buffers.get(self.input_name, host_in.nbytes)
        self.context.set_tensor_address(self.input_name, dev_in)
        self._check(cudart.cudaMemcpyAsync(dev_in, host_in.ctypes.data, host_in.nbytes, h2d, self.stream), "copy in")
        outputs = []
        for name in self.output_names:
            host = np.empty(tuple(self.context.get_tensor_shape(name)), trt.nptype(self.engine.get_tensor_dtype(name)))
            dev = self.buffers.get(name, host.nbytes)
            self.context.set_tensor_address(name, dev)
            outputs.append((dev, host))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for dev, host in outputs:
            self._check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, d2h, self.stream), "copy out")
        self._check(cudart.cudaStreamSynchronize(self.stream), "stream sync")
        return [host for _, host in outputs]

    def __del__(self) -> None:
        buffers = getattr(self, "buffers", None)
        if buffers is not None:
            buffers.release()


def tensorrt_available() -> bool:
    """True when the ``tensorrt`` Python package imports."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def open_backend(root: Path, model_file: str, engine_file: str | None, output_names: list[str],
                 backend: str = "auto", threads: int | None = None, sha256: str | None = None) -> Backend:
    """TensorRT when asked for or available with a built engine, else ONNX Runtime."""
    if backend in ("auto", "tensorrt") and engine_file and tensorrt_available():
        return TensorRTBackend(root / engine_file, output_names)
    if backend == "tensorrt":
        raise BundleError(f"{root}: backend 'tensorrt' asked for, but the bundle has no engine or tensorrt "
                          "does not import; use backend 'auto' or build the engine on the target (see manifest)")
    return OrtBackend(root / model_file, threads=threads, sha256=sha256)
