"""How the nearest-neighbour search is written in the graph, A/B on one enrollment: ``min(1)`` (exported as ReduceMin
+ ArgMin, two passes over the patches x bank distance matrix) against ``topk(1)`` (one pass, what export writes now).
Both graphs are exported from the same ``enrollment.pt`` and timed in interleaved blocks in one process, ONNX Runtime
CPU, 2 threads, batch 1, so both see the same machine; their outputs are checked equal first.

    .venv/bin/python benchmarks/bench_search_ops.py benchmarks/out/search/mono-0.1 [--n 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="a bundle folder holding enrollment.pt (PatchCore)")
    ap.add_argument("--n", type=int, default=200, help="timed runs per graph")
    args = ap.parse_args()
    import numpy as np
    import onnxruntime as ort
    import torch

    from flows.anomaly.enroll import load_enrollment, restore_model
    from flows.anomaly.export import export_onnx
    from flows.anomaly.model import AnomalyScorer
    from serving.engine.preprocess import InputSpec

    class MinScorer(AnomalyScorer):
        """The search as it was: ``min(1)`` over the distance matrix."""

        def nearest(self, emb):
            _, dim, h, w = emb.shape
            flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
            partial, match = torch.addmm(self.bank_sq, flat, self.bank_t, alpha=-2.0).min(1)
            return (partial + (flat * flat).sum(1)).clamp_min(0.0).sqrt().reshape(-1, h, w), match.reshape(-1, h, w)

    ckpt = load_enrollment(args.bundle)
    model = restore_model(ckpt)
    spec = InputSpec.model_validate(ckpt["input"])
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, scorer in (("min(1): ReduceMin + ArgMin", MinScorer(model)), ("topk(1): TopK", AnomalyScorer(model))):
            path = Path(tmp) / f"{len(sessions)}.onnx"
            export_onnx(scorer, path, spec, 17)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, spec.height, spec.width), np.float32)
    outs = [s.run(None, {"image": x}) for s in sessions.values()]
    assert np.allclose(outs[0][0], outs[1][0], rtol=1e-5) and np.array_equal(outs[0][2], outs[1][2]), "outputs differ"
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(max(1, args.n // 10)):
        for name, s in sessions.items():
            s.run(None, {"image": x})  # absorbs the other session's spinning threads
            for _ in range(10):
                t = time.perf_counter()
                s.run(None, {"image": x})
                times[name].append((time.perf_counter() - t) * 1e3)
    bank = int(model.memory_bank.shape[0])
    print(f"{args.bundle}: bank {bank:,} patches, input {spec.width}x{spec.height}, outputs equal\n")
    print("| search in the graph | p50 (ms) | p90 (ms) |\n|---|---|---|")
    for name, v in times.items():
        print(f"| {name} | {np.percentile(v, 50):.1f} | {np.percentile(v, 90):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
