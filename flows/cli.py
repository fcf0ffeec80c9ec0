"""``lineguard``: the pipeline's command line. Each command calls one plain function.

Heavy imports happen inside the commands, so ``lineguard --help`` is instant and
``lineguard evaluate`` (serving engine only) never loads torch.

>>> build_parser().parse_args(["enroll", "--data", "d", "--out", "b"]).model is None
True
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serving.errors import exit_code


def _params(args: argparse.Namespace):
    from flows.params import load_params

    return load_params(args.params, {
        "model.algorithm": getattr(args, "model", None),
        "model.backbone": getattr(args, "backbone", None),
        "model.weights": getattr(args, "weights", None),
        "model.roi": getattr(args, "roi", None),
        "enroll.skip_corrupt": True if getattr(args, "skip_corrupt", False) else None,
        "tracking.enabled": False if getattr(args, "no_track", False) else None,
    })


def cmd_prepare(args: argparse.Namespace) -> int:
    """Write the ELPV demo data set (MVTec layout)."""
    from flows.data.prepare import prepare_elpv

    e = _params(args).data.elpv
    out = prepare_elpv(args.out, e.n_train, e.n_test_good, e.n_test_defect, e.cell_type, e.seed)
    print(f"wrote {out} ({e.n_train} train/good, {e.n_test_good} test/good, {e.n_test_defect} test/defect)")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enroll + calibrate (+ export unless --no-export)."""
    from flows.anomaly.enroll import enroll, set_run_id

    params = _params(args)
    r = enroll(args.data, params, args.out)
    for line in r.skipped:
        print(f"skipped (corrupt): {line}")
    t = r.thresholds
    print(f"enrolled {r.n_enroll} images (+{r.n_holdout} held out for calibration) in {r.timings['enroll_s']:.1f} s "
          f"(embed {r.timings['embed_s']:.1f} s, coreset {r.timings['coreset_s']:.1f} s); bank size {r.bank_size}; "
          f"peak RSS {r.peak_rss_mb:.0f} MiB")
    print(f"threshold {t.image:.4g} for target FRR {t.target_frr:.2%} ({t.method}); held-out FRR {t.holdout_frr:.2%}; "
          f"pixel threshold {t.pixel:.4g}")
    if params.tracking.enabled:
        from flows.tracking.mlflow_runs import log_enrollment

        run_id = log_enrollment(r, params, args.data)
        set_run_id(r.path, run_id)
        print(f"MLflow run {run_id}")
    if not args.no_export:
        return cmd_export(argparse.Namespace(bundle=args.out, params=args.params, no_track=args.no_track))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export ONNX (+TensorRT), check parity, write the manifest; register in MLflow."""
    from flows.anomaly.enroll import load_enrollment
    from flows.anomaly.export import export_bundle

    params = _params(args)
    m = export_bundle(args.bundle, params.export)
    print(f"exported {args.bundle}: {m.bundle_version}; ONNX parity max rel diff {m.parity['onnx_max_rel_diff']:.2e} "
          f"(tolerance {params.export.parity_rtol:.0e}); TensorRT: {'built' if m.tensorrt.built else 'not built'}")
    run_id = load_enrollment(args.bundle).get("mlflow_run_id")
    if params.tracking.enabled and run_id:
        from flows.tracking.mlflow_runs import register_bundle

        v = register_bundle(args.bundle, run_id, params.tracking)
        print(f"registered {params.tracking.model_name} version {v} as @{params.tracking.alias}")
    return 0


def _run_id(bundle: str) -> str | None:
    from serving.engine.bundle import load_bundle

    return load_bundle(bundle, verify_hashes=False).manifest.provenance.mlflow_run_id


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the data set's test/ folder through the serving engine."""
    from flows.evaluation.evaluate import evaluate

    params = _params(args)
    rules = roi = None
    if args.station_config:
        from serving.config import load_config

        station = load_config(args.station_config)
        rules, roi = station.gate, station.roi
    report = evaluate(args.bundle, args.data, progress=not args.json, keep=params.tracking.enabled, rules=rules, roi=roi)
    run_id = _run_id(args.bundle) if params.tracking.enabled else None
    if run_id:
        from flows.tracking.mlflow_runs import log_evaluation

        log_evaluation(run_id, report, params.tracking)
    report.pop("_results", None)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report))
        return 0
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"image AUROC {fmt(report['image_auroc'])}   pixel AUROC {fmt(report['pixel_auroc'])}")
    print(f"at threshold {report['threshold']:.4g}: FRR {fmt(report['frr'])} on {report['n_good']} good, "
          f"escape rate {fmt(report['escape_rate'])} on {report['n_defect']} defective")
    for t, v in report["per_type"].items():
        print(f"  {t:<16} n={v['n']:<4} " + " ".join(f"{k}={fmt(x)}" for k, x in v.items() if k != "n"))
    for row in report["threshold_sweep"]:
        print(f"  target FRR {row['target_frr']:<6} threshold {row['threshold']:.4g}  FRR {fmt(row['frr'])}  "
              f"escape {fmt(row['escape_rate'])}")
    print(f"serving latency p50 {report['latency_ms']['p50']:.1f} ms, p99 {report['latency_ms']['p99']:.1f} ms "
          f"({', '.join(report['providers'])})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: ELPV mono cells, end to end, as a Prefect flow."""
    import subprocess
    import time

    from flows.orchestration.pipeline import enroll_flow

    params = _params(args)
    t0 = time.perf_counter()
    summary = enroll_flow(params.data.dir, args.out, params, prepare=True)
    m = summary["metrics"]
    print("\n== Replay of the held-out cells through the lean serving engine (separate process, no torch) ==")
    overlays = Path(args.out).parent / "replay_overlays"
    subprocess.run([sys.executable, "-m", "serving.cli", "replay", "--bundle", args.out,
                    "--images", str(Path(params.data.dir) / "test"), "--overlays", str(overlays)], check=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print("\n== Summary ==")
    print(f"image AUROC {fmt(m['image_auroc'])}  pixel AUROC {fmt(m['pixel_auroc'])} (ELPV has no masks)  "
          f"FRR {fmt(m['frr'])}  escape rate {fmt(m['escape_rate'])}  threshold {m['threshold']:.4g}")
    print(f"enrollment {summary['enroll_timings']['enroll_s']:.1f} s, bank {summary['bank_size']} patches, "
          f"ONNX parity {summary['onnx_parity']:.1e}, serving p50 {m['latency_ms']['p50']:.1f} ms")
    print(f"bundle:   {summary['bundle']}  ({summary['bundle_version']})")
    print(f"overlays: {overlays.resolve()}")
    if summary["mlflow_run_id"]:
        print(f"MLflow:   run {summary['mlflow_run_id']}, model {params.tracking.model_name} "
              f"v{summary['model_version']} @{params.tracking.alias}  (browse: .venv/bin/mlflow ui "
              f"--backend-store-uri {params.tracking.uri})")
    print(f"TensorRT: {summary['tensorrt']}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The pipeline CLI's argument parser."""
    p = argparse.ArgumentParser(prog="lineguard", description="Lineguard pipeline: enroll, calibrate, evaluate, export")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="write the ELPV demo data set in MVTec layout")
    s.add_argument("--out", default="data/elpv")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("enroll", help="enroll from good images, calibrate, export a bundle")
    s.add_argument("--data", required=True, help="MVTec-layout folder with train/good")
    s.add_argument("--out", required=True, help="bundle folder to write")
    s.add_argument("--model", choices=["patchcore", "padim"])
    s.add_argument("--backbone", help="timm backbone name (default from params.yaml)")
    s.add_argument("--weights", help="backbone weights file (for backbones without packaged weights)")
    s.add_argument("--roi", help="x,y,w,h crop in source pixels")
    s.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (they are listed)")
    s.add_argument("--no-export", action="store_true", help="stop after enrollment.pt (DVC's enroll stage)")
    s.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    s.set_defaults(func=cmd_enroll)

    s = sub.add_parser("export", help="export a bundle's enrollment to ONNX (+TensorRT) with parity checks")
    s.add_argument("--bundle", required=True)
    s.add_argument("--no-track", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("evaluate", help="score test/ through the serving engine")
    s.add_argument("--bundle", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--out", help="also write the JSON report to this file")
    s.add_argument("--no-track", action="store_true", help="do not log to the bundle's MLflow run")
    s.add_argument("--station-config", help="judge with this station config's gate rules and ROI (as the station would)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("demo", help="the main job: ELPV demo end to end as a Prefect flow")
    s.add_argument("--out", default="models/elpv/bundle")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; input errors exit 2 with the message, not a traceback."""
    import warnings

    from flows.settings import quiet_environment

    quiet_environment()
    # timm and anomalib warn about their own internal deprecations on import; not actionable here.
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    return exit_code(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
