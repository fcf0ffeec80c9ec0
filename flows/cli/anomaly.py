"""``lineguard`` commands for the anomaly model: prepare, enroll, export, evaluate, predict, compare, demo.

Each command checks its arguments and paths first, then calls one plain function.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from flows.cli.common import add_params_args, fmt, fresh_output, load, require_bundle, require_dataset


def cmd_prepare(args: argparse.Namespace) -> int:
    """Write the ELPV demo data set (MVTec layout)."""
    from flows.data.prepare import prepare_elpv

    e = load(args).data.elpv
    out = prepare_elpv(args.out, e.n_train, e.n_test_good, e.n_test_defect, e.cell_type, e.seed)
    print(f"wrote {out} ({e.n_train} train/good, {e.n_test_good} test/good, {e.n_test_defect} test/defect)")
    return 0


def _flags(args: argparse.Namespace) -> dict:
    return {"model.algorithm": getattr(args, "model", None), "model.backbone": getattr(args, "backbone", None),
            "model.weights": getattr(args, "weights", None), "model.roi": getattr(args, "roi", None),
            "product": getattr(args, "product", None),
            "enroll.skip_corrupt": True if getattr(args, "skip_corrupt", False) else None,
            "tracking.enabled": False if getattr(args, "no_track", False) else None}


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enroll + calibrate (+ export unless --no-export)."""
    from flows.data.dataset import scan_dataset

    params = load(args, **_flags(args))
    data = args.data or params.data.dir
    require_dataset(data)
    scan_dataset(data, min_train=params.enroll.min_good_images)  # layout and counts, before torch is imported
    from serving.engine.preprocess import InputSpec, Roi, check_roi_scale

    h, w = params.model.input_hw
    check_roi_scale(Roi.parse(params.model.roi), InputSpec(height=h, width=w), source="model.roi")
    fresh_output(args.out, args.force or args.no_export)
    from flows.anomaly.enroll import enroll, set_run_id

    started = time.time()
    r = enroll(data, params, args.out)
    for line in r.skipped:
        print(f"skipped (corrupt): {line}")
    t = r.thresholds
    print(f"enrolled {r.n_enroll} images, each also scored unseen ({t.folds} folds), in {r.timings['enroll_s']:.1f} s "
          f"(embed {r.timings['embed_s']:.1f} s, coreset {r.timings['coreset_s']:.1f} s); bank size {r.bank_size}; "
          f"peak RSS {r.peak_rss_mb:.0f} MiB")
    lo, hi = t.frr_interval
    print(f"threshold {t.image:.4g} for target FRR {t.target_frr:.2%} ({t.method}); expected FRR {t.frr_expected:.2%} "
          f"(95 % interval {lo:.2%}-{hi:.2%}, {t.n_normals} normals); pixel threshold {t.pixel:.4g}")
    if params.tracking.enabled:
        from flows.tracking.mlflow_runs import log_enrollment

        run_id = log_enrollment(r, params, data, started)
        set_run_id(r.path, run_id)
        print(f"MLflow run {run_id}")
    if not args.no_export:
        return _export(args.out, params)
    return 0


def _export(bundle: str, params) -> int:
    from flows.anomaly.enroll import load_enrollment
    from flows.anomaly.export import export_bundle

    m = export_bundle(bundle, params.export)
    print(f"exported {bundle}: {m.bundle_version}; ONNX parity max rel diff {m.parity['onnx_max_rel_diff']:.2e} "
          f"(tolerance {params.export.parity_rtol:.0e}); TensorRT: {'built' if m.tensorrt.built else 'not built'}; "
          f"search: {m.search_summary}")
    run_id = load_enrollment(bundle).get("mlflow_run_id")
    if params.tracking.enabled and run_id:
        from flows.tracking.mlflow_runs import register_bundle

        v = register_bundle(bundle, run_id, params)
        print(f"registered {params.model_name} version {v} as @{params.tracking.alias}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export ONNX (+TensorRT), check parity, write the manifest; register in MLflow."""
    if not (Path(args.bundle) / "enrollment.pt").is_file():
        from serving.errors import ConfigError

        raise ConfigError(f"{args.bundle}: no enrollment.pt to export; run `lineguard enroll --out {args.bundle}` first")
    return _export(args.bundle, load(args, **_flags(args)))


def _gate(args: argparse.Namespace):
    """(gate rules, ROI) of ``--station-config``, or (None, None)."""
    if not getattr(args, "station_config", None):
        return None, None
    from serving.config import load_config

    station = load_config(args.station_config)
    return station.gate, station.roi


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the data set's test/ folder through the serving engine; optionally an HTML report."""
    require_bundle(args.bundle)
    require_dataset(args.data)
    params = load(args, **_flags(args))
    rules, roi = _gate(args)
    from flows.evaluation.evaluate import evaluate

    started = time.time()
    keep = params.tracking.enabled or bool(args.report)
    report = evaluate(args.bundle, args.data, progress=not args.json, keep=keep, rules=rules, roi=roi,
                      backend=args.backend)
    if args.report:
        from flows.evaluation.report import write_report

        from serving.engine.bundle import load_bundle

        path = write_report(report, args.report, roi or load_bundle(args.bundle, verify_hashes=False).manifest.roi)
        print(f"report: {path}", file=sys.stderr)
    from serving.engine.bundle import load_bundle

    run_id = load_bundle(args.bundle, verify_hashes=False).manifest.provenance.mlflow_run_id
    if params.tracking.enabled and run_id:
        from flows.tracking.mlflow_runs import log_evaluation

        log_evaluation(run_id, report, params, args.report, started)
    report.pop("_results", None)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report))
        return 0
    print_report(report)
    return 0


def print_report(report: dict) -> None:
    """The evaluation as a few lines for a terminal."""
    ci = report.get("image_auroc_interval")
    print(f"image AUROC {fmt(report['image_auroc'])}" + (f" (95 % interval {ci[0]:.4f}-{ci[1]:.4f})" if ci else "")
          + f"   pixel AUROC {fmt(report['pixel_auroc'])}")
    esc = report.get("escape_interval")
    print(f"at threshold {report['threshold']:.4g}: FRR {fmt(report['frr'])} on {report['n_good']} good, "
          f"escape rate {fmt(report['escape_rate'])}" + (f" (95 % interval {esc[0]:.4f}-{esc[1]:.4f})" if esc else "")
          + f" on {report['n_defect']} defective")
    if report.get("frr_inside_interval") is not None:
        lo, hi = report["frr_interval"]
        where = "inside" if report["frr_inside_interval"] else "OUTSIDE"
        print(f"calibration promised FRR {report['frr_expected']:.2%} (95 % interval {lo:.2%}-{hi:.2%}): observed is "
              f"{where} it (binomial p={report['frr_binomial_p']:.2g})")
    for t, v in report["per_type"].items():
        print(f"  {t:<16} n={v['n']:<4} " + " ".join(f"{k}={fmt(x)}" for k, x in v.items() if k != "n"))
    for row in report["threshold_sweep"]:
        print(f"  target FRR {row['target_frr']:<6} threshold {row['threshold']:.4g}  FRR {fmt(row['frr'])}  "
              f"escape {fmt(row['escape_rate'])}")
    print(f"serving latency p50 {report['latency_ms']['p50']:.1f} ms, p99 {report['latency_ms']['p99']:.1f} ms "
          f"({', '.join(report['providers'])})")


def cmd_predict(args: argparse.Namespace) -> int:
    """Annotated images and a CSV of verdicts for a folder of images."""
    require_bundle(args.bundle)
    rules, roi = _gate(args)
    from flows.evaluation.predict import predict

    csv_path, rows = predict(args.bundle, args.images, args.out, rules=rules, roi=roi)
    n_fail = sum(r.verdict == "FAIL" for r in rows)
    print(f"{len(rows)} images: {len(rows) - n_fail} PASS, {n_fail} FAIL; annotated images in {args.out}, table {csv_path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Two bundles on the same data: metrics side by side, and a plot of their scores."""
    for b in (args.bundle_a, args.bundle_b):
        require_bundle(b)
    require_dataset(args.data)
    from flows.evaluation.compare import compare

    result = compare(args.bundle_a, args.bundle_b, args.data, args.out)
    print(result["table"])
    print(f"plot: {result['plot']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: ELPV mono cells, end to end, as a Prefect flow."""
    import subprocess

    params = load(args)
    from flows.fleet.keys import ensure_key
    from flows.orchestration.pipeline import enroll_flow

    ensure_key(params.export.signing_key)  # the demo station (station.example.yaml) trusts keys/pipeline.pub
    t0 = time.perf_counter()
    summary = enroll_flow(params.data.dir, args.out, params, prepare=True)
    m = summary["metrics"]
    print("\n== Replay of the held-out cells through the lean serving engine (separate process, no torch) ==")
    overlays = Path(args.out).parent / "replay_overlays"
    subprocess.run([sys.executable, "-m", "serving.cli", "replay", "--bundle", args.out,
                    "--images", str(Path(params.data.dir) / "test"), "--overlays", str(overlays)], check=True)
    print("\n== Summary ==")
    print(f"image AUROC {fmt(m['image_auroc'])}  pixel AUROC {fmt(m['pixel_auroc'])} (ELPV has no masks)  "
          f"FRR {fmt(m['frr'])}  escape rate {fmt(m['escape_rate'])}  threshold {m['threshold']:.4g}")
    print(f"enrollment {summary['enroll_timings']['enroll_s']:.1f} s, bank {summary['bank_size']} patches, "
          f"ONNX parity {summary['onnx_parity']:.1e}, serving p50 {m['latency_ms']['p50']:.1f} ms")
    print(f"bundle:   {summary['bundle']}  ({summary['bundle_version']})")
    print(f"overlays: {overlays.resolve()}")
    if summary["mlflow_run_id"]:
        print(f"MLflow:   model {params.model_name} v{summary['model_version']} @{params.tracking.alias}, run "
              f"{summary['mlflow_run_id']}  (browse: .venv/bin/mlflow ui --backend-store-uri {params.tracking.uri}, "
              f"then Experiments > {params.tracking.experiment} > Runs, or Models > {params.model_name})")
    print(f"TensorRT: {summary['tensorrt']}")
    print(f"search:   {summary['search']}  (export.search; the station runs it on a CPU)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def register(sub) -> None:
    """Add these commands to the ``lineguard`` parser."""
    s = sub.add_parser("prepare", help="write the ELPV demo data set in MVTec layout")
    s.add_argument("--out", default="data/elpv", help="folder to write (default data/elpv)")
    add_params_args(s)
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("enroll", help="enroll from good images, calibrate, export a bundle")
    s.add_argument("--data", help="MVTec-layout folder with train/good (default: data.dir of the parameters)")
    s.add_argument("--out", required=True, help="bundle folder to write")
    s.add_argument("--product", help="product name: names the registered model lineguard-<product>")
    s.add_argument("--model", choices=["patchcore", "padim"], help="anomaly algorithm (default from parameters)")
    s.add_argument("--backbone", help="timm backbone name (default from parameters)")
    s.add_argument("--weights", help="backbone weights file (for backbones without packaged weights)")
    s.add_argument("--roi", help="x,y,w,h crop in source pixels")
    s.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (they are listed)")
    s.add_argument("--no-export", action="store_true", help="stop after enrollment.pt (DVC's enroll stage)")
    s.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    s.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    add_params_args(s)
    s.set_defaults(func=cmd_enroll)

    s = sub.add_parser("export", help="export a bundle's enrollment to ONNX (+TensorRT) with parity checks")
    s.add_argument("--bundle", required=True, help="bundle folder holding enrollment.pt")
    s.add_argument("--no-track", action="store_true", help="do not register the bundle in MLflow")
    add_params_args(s)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("evaluate", help="score test/ through the serving engine")
    s.add_argument("--bundle", required=True, help="bundle folder")
    s.add_argument("--data", required=True, help="MVTec-layout folder with test/")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--out", help="also write the JSON report to this file")
    s.add_argument("--report", metavar="DIR", help="write a self-contained HTML report (DIR/index.html)")
    s.add_argument("--no-track", action="store_true", help="do not log an evaluation run to MLflow")
    s.add_argument("--station-config", help="judge with this station config's gate rules and ROI (as the station would)")
    s.add_argument("--backend", choices=["auto", "onnxruntime", "exact"], default="auto",
                   help="auto: as a CPU station runs it (the search index where the bundle has one); "
                        "exact: the whole graph's exact search, for comparison")
    add_params_args(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="annotated images and a CSV of verdicts for a folder of images")
    s.add_argument("--bundle", required=True, help="bundle folder")
    s.add_argument("--images", required=True, help="an image or a folder (searched recursively)")
    s.add_argument("--out", required=True, help="folder for annotated images and predictions.csv")
    s.add_argument("--station-config", help="judge with this station config's gate rules and ROI")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("compare", help="two bundles on the same data, side by side")
    s.add_argument("bundle_a", help="first bundle folder")
    s.add_argument("bundle_b", help="second bundle folder")
    s.add_argument("--data", required=True, help="MVTec-layout folder with test/")
    s.add_argument("--out", default="reports/compare", help="folder for compare.png and compare.json")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("demo", help="the main job: ELPV demo end to end as a Prefect flow")
    s.add_argument("--out", default="models/elpv/bundle", help="bundle folder to write")
    add_params_args(s)
    s.set_defaults(func=cmd_demo)
