"""The nearest-neighbour search against accuracy: memory-bank size (coreset ratio) vs image/pixel AUROC, escape
rate at the calibrated threshold, and the station's whole scoring path against the backbone alone.

The exact search of every patch against the bank is a GEMM that scales with the bank, so a smaller coreset is one
lever (the table shows what it costs in accuracy on each set) and the search index another (banks of 8k+ patches:
each row then also shows the exact graph's accuracy and latency on the same bundle). (A PCA-reduced
coarse search with an exact re-rank was also tried: at 32 of 152 dimensions and 16 candidates it keeps the
image AUROC, but ONNX Runtime's TopK and gather over the candidates cost more than the exact GEMM saves.)

    .venv/bin/python benchmarks/bench_search.py [--ratios 0.1,0.03,0.01] [--n 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(data: Path, params, out: Path, n: int) -> dict:
    from flows.anomaly.enroll import enroll
    from flows.anomaly.export import export_bundle
    from flows.evaluation.evaluate import evaluate
    from serving.station.bench import run_bench

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = enroll(data, params, out, progress=False)
    seconds = time.perf_counter() - t0
    export_bundle(out, params.export)
    m = evaluate(out, data, progress=False)
    # the same bundle through the whole graph's exact search: what the index must match
    e = evaluate(out, data, progress=False, backend="exact") if m["engine"].endswith("+ivf") else m
    b = run_bench(out, data / "test", n, cold_runs=0)
    return {"bank": r.bank_size, "enroll_s": seconds, "search": b["search"], "image_auroc": m["image_auroc"],
            "pixel_auroc": m["pixel_auroc"], "exact_image_auroc": e["image_auroc"], "exact_pixel_auroc": e["pixel_auroc"],
            "frr": m["frr"], "escape_rate": m["escape_rate"], "p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"],
            "exact_p50_ms": b["exact_p50_ms"] or b["p50_ms"], "backbone_p50_ms": b["backbone_p50_ms"],
            "x_backbone": b["ratio_to_backbone"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratios", default="0.1,0.03,0.01")
    ap.add_argument("--n", type=int, default=100, help="parts timed per bundle")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "search"))
    args = ap.parse_args()
    from flows.data.prepare import prepare_elpv
    from flows.params import load_params
    from flows.settings import quiet_environment

    quiet_environment(ROOT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {}
    bottle = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"
    if bottle.is_dir():
        sets["MVTec AD bottle"] = (bottle, {}, ROOT / "products" / "bottle.yaml")
    e = load_params(ROOT / "params.yaml", {}).data.elpv
    sets["ELPV mono"] = (prepare_elpv(out / "data-mono", n_train=e.n_train, n_test_good=e.n_test_good,
                                      n_test_defect=e.n_test_defect, cell_type="mono", seed=e.seed), {}, None)
    rows = []
    for name, (data, extra, product) in sets.items():
        for ratio in (float(x) for x in args.ratios.split(",")):
            params = load_params(ROOT / "params.yaml", {"tracking.enabled": False, "model.coreset_ratio": ratio, **extra},
                                 product)
            r = one(data, params, out / f"{name.split()[-1]}-{ratio}", args.n)
            rows.append({"set": name, "ratio": ratio, **r})
            print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}\n")
    print("| set | coreset ratio | bank (patches) | search | image AUROC (exact) | pixel AUROC (exact) | FRR | escape | "
          "whole p50 / p99 (ms) | exact p50 (ms) | backbone p50 (ms) | whole / backbone | enroll (s) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pix = "–" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.4f} ({r['exact_pixel_auroc']:.4f})"
        print(f"| {r['set']} | {r['ratio']:g} | {r['bank']:,} | {r['search']} | {r['image_auroc']:.4f} "
              f"({r['exact_image_auroc']:.4f}) | {pix} | {r['frr']:.1%} | {r['escape_rate']:.1%} | "
              f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['exact_p50_ms']:.1f} | {r['backbone_p50_ms']:.1f} | "
              f"{r['x_backbone']:.1f}× | {r['enroll_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
