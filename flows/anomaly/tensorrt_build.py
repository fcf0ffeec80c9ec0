"""TensorRT engine building: an optional path, import-guarded.

``tensorrt`` is not on PyPI in a usable form for every site: on a Jetson it
comes with JetPack, on x86 GPUs from NVIDIA's index. Where it imports,
:func:`build_engine` builds an FP16 (or FP32) engine from the bundle's ONNX with
a dynamic-batch optimisation profile. Everywhere, :func:`trtexec_command` gives
the equivalent command line to build on the target device.

>>> trtexec_command("model.onnx", "model.plan", input_name="image", shape=(3, 256, 256))[:3]
['trtexec', '--onnx=model.onnx', '--saveEngine=model.plan']
"""

from __future__ import annotations

from pathlib import Path


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, *, input_name: str, shape: tuple[int, int, int],
                    precision: str = "fp16", max_batch: int = 8, workspace_mib: int = 1024) -> list[str]:
    """The ``trtexec`` command that builds the same engine as :func:`build_engine`."""
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision {precision!r}: choose fp16 or fp32")
    c, h, w = shape
    cmd = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={input_name}:1x{c}x{h}x{w}",
        f"--optShapes={input_name}:1x{c}x{h}x{w}",
        f"--maxShapes={input_name}:{max_batch}x{c}x{h}x{w}",
        f"--memPoolSize=workspace:{workspace_mib}M",
    ]
    if precision == "fp16":
        cmd.append("--fp16")
    return cmd


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, input_name: str, shape: tuple[int, int, int],
                 precision: str = "fp16", max_batch: int = 8, workspace_mib: int = 1024) -> dict:
    """Build a serialized TensorRT engine; return version, precision and GPU for the manifest."""
    import tensorrt as trt  # noqa: PLC0415 - optional dependency

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse the ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    c, h, w = shape
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, c, h, w), (1, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the log above)")
    Path(engine_path).write_bytes(bytes(blob))
    gpu = None
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415

        _, props = cudart.cudaGetDeviceProperties(0)
        gpu = props.name.decode(errors="replace").strip("\x00")
    except Exception:  # noqa: BLE001 - the GPU name is informational only
        pass
    return {"version": trt.__version__, "precision": precision, "gpu": gpu}
