"""GPU latency of the whole scoring path (backbone -> patch NN search -> anomaly map -> score).

The lent GPU machine has torch + CUDA but neither anomalib nor TensorRT, so the scorer is
traced to TorchScript here and timed there at batch 1, fp32 and fp16, eager and replayed from a CUDA graph
(the yardstick's way). The anomaly map's upsample-and-blur operators are constants of the trace (two small
matrices, ``serving.engine.search.map_operator``; ``tests/code/test_model.py`` checks that nothing is built per
call); a capture that fails anyway is reported with its error, beside the eager figures.

    .venv/bin/python benchmarks/gpu_latency.py export models/elpv/bundle benchmarks/out/scorer.ts
    python benchmarks/gpu_latency.py run benchmarks/out/scorer.ts         # on the GPU machine
"""

from __future__ import annotations

import json
import sys
import time

import torch


def export(bundle: str, out: str) -> None:
    """Trace the bundle's enrollment to a TorchScript module that needs only torch to load."""
    sys.path.insert(0, ".")
    from flows.anomaly.enroll import load_enrollment, restore_model
    from flows.anomaly.model import AnomalyScorer

    ckpt = load_enrollment(bundle)
    scorer = AnomalyScorer(restore_model(ckpt)).eval()
    size = ckpt["input"]["height"], ckpt["input"]["width"]
    with torch.no_grad():
        traced = torch.jit.trace(scorer, torch.zeros(1, 3, *size), check_trace=False)
    traced.save(out)
    print(f"traced {bundle} -> {out} (input 1x3x{size[0]}x{size[1]})")


def _time(fn, n: int) -> dict:
    times = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99) - 1], "n": n}


def _graph(m, x: torch.Tensor, n: int) -> dict:
    """The scorer captured once in a CUDA graph and replayed (static input buffer): p50/p99, and the score's
    difference from eager; or the capture's error."""
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
            for _ in range(3):
                m(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = m(static_x)
    except RuntimeError as exc:
        return {"error": str(exc).splitlines()[0]}
    graph.replay()
    torch.cuda.synchronize()
    diff = float((out[0].float() - m(x)[0].float()).abs().max())
    return {**_time(graph.replay, n), "score_diff_vs_eager": diff}


def run(path: str, size: int = 224, n: int = 500) -> None:
    """Time the traced scorer on CUDA."""
    dev = torch.device("cuda")
    # the profiling executor re-optimises during the first runs, which breaks graph capture
    torch._C._jit_set_profiling_executor(False)
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for dtype in (torch.float32, torch.float16):
        m = torch.jit.load(path, map_location=dev).eval().to(dtype)
        x = torch.randn(1, 3, size, size, device=dev, dtype=dtype)
        with torch.inference_mode():
            for _ in range(20):
                m(x)
            eager = _time(lambda: m(x), n)
            entry = results[str(dtype).split(".")[-1]] = {"eager": eager, "score": float(m(x)[0].float()[0])}
            entry["cuda_graph"] = _graph(m, x, n)
            print(json.dumps(entry), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(sys.argv[2], sys.argv[3])
    else:
        run(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 224)
