"""Calibration benchmark: the false-reject rate each bundle promises (conformal, with its 95 % interval)
against what its test goods show, and the escape rate at that threshold, at the default parameters.

Sets: MVTec AD bottle (products/bottle.yaml, as `lineguard enroll --config products/bottle.yaml` runs it),
ELPV mono (the embedded default) and ELPV poly (same parameters, `data.elpv.cell_type=poly`). Each ELPV bundle is
then judged a second time on every cell of its type that it did not enroll (all the remaining good cells and
every defective one): 100 + 100 test cells leave an AUROC of 0.97 about +-0.02 and an escape rate of 37 % about
+-10 %, so the intervals say how much of a gap to a target is the test set's size.

    .venv/bin/python benchmarks/bench_calibration.py [--out benchmarks/out/calibration]
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


KEYS = ("threshold", "frr_expected", "frr_interval", "frr", "frr_inside_interval", "frr_binomial_p", "escape_rate",
        "escape_interval", "n_good", "n_defect", "image_auroc", "image_auroc_interval")


def one(name: str, data: Path, params, out: Path) -> dict:
    from flows.anomaly.enroll import enroll
    from flows.anomaly.export import export_bundle
    from flows.evaluation.evaluate import evaluate

    bundle = out / name
    shutil.rmtree(bundle, ignore_errors=True)
    t0 = time.perf_counter()
    r = enroll(data, params, bundle, progress=False)
    seconds = time.perf_counter() - t0
    export_bundle(bundle, params.export)
    m = evaluate(bundle, data, progress=False)
    return {"n_normals": r.n_enroll, "enroll_s": seconds, **{k: m[k] for k in KEYS}}


def every_cell_left(name: str, row: dict, params, cell: str, out: Path) -> dict:
    """The bundle of ``row`` judged on every ``cell`` cell it did not enroll. The split is the same seeded shuffle
    with a longer test list, so the enrolled cells are the same 200 and none of them is scored."""
    from flows.data.prepare import prepare_elpv
    from flows.evaluation.evaluate import evaluate

    e = params.data.elpv
    data = prepare_elpv(out / f"data-{cell}-all", n_train=e.n_train, n_test_good=None, n_test_defect=None,
                        cell_type=cell, seed=e.seed)
    m = evaluate(out / name, data, progress=False)
    return {"n_normals": row["n_normals"], "enroll_s": row["enroll_s"], **{k: m[k] for k in KEYS}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "calibration"))
    args = ap.parse_args()
    from flows.data.prepare import prepare_elpv
    from flows.params import load_params
    from flows.settings import quiet_environment

    quiet_environment(ROOT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    bottle = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"
    if bottle.is_dir():
        rows["MVTec AD bottle"] = one("bottle", bottle, load_params(ROOT / "params.yaml", {"tracking.enabled": False},
                                                                     ROOT / "products" / "bottle.yaml"), out)
    for cell in ("mono", "poly"):
        params = load_params(ROOT / "params.yaml", {"tracking.enabled": False, "data.elpv.cell_type": cell})
        e = params.data.elpv
        data = prepare_elpv(out / f"data-{cell}", n_train=e.n_train, n_test_good=e.n_test_good,
                            n_test_defect=e.n_test_defect, cell_type=cell, seed=e.seed)
        rows[f"ELPV {cell}"] = one(f"elpv-{cell}", data, params, out)
        rows[f"ELPV {cell}, every cell not enrolled"] = every_cell_left(f"elpv-{cell}", rows[f"ELPV {cell}"], params,
                                                                        cell, out)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          "default parameters (params.yaml; bottle with products/bottle.yaml), target FRR 1 %\n")
    print("| set | normals | threshold | expected FRR (95 % interval) | observed FRR on test goods | inside | "
          "binomial p | escape rate (95 % interval) | image AUROC (95 % interval) | enroll (s) |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        (lo, hi), (elo, ehi), (alo, ahi) = r["frr_interval"], r["escape_interval"], r["image_auroc_interval"]
        print(f"| {name} | {r['n_normals']} | {r['threshold']:.3f} | {r['frr_expected']:.1%} ({lo:.1%}–{hi:.1%}) | "
              f"{r['frr']:.1%} of {r['n_good']} | {'yes' if r['frr_inside_interval'] else 'no'} | "
              f"{r['frr_binomial_p']:.2f} | {r['escape_rate']:.1%} of {r['n_defect']} ({elo:.0%}–{ehi:.0%}) | "
              f"{r['image_auroc']:.4f} ({alo:.3f}–{ahi:.3f}) | {r['enroll_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
