"""``lineguard stability``, ``lineguard recalibrate`` and ``lineguard drift-report``: the drift loop's commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.cli.common import add_params_args, load, require_bundle
from serving.errors import ConfigError


def register(sub) -> None:
    """Add these commands to the ``lineguard`` parser."""
    s = sub.add_parser("stability", help="replay a folder in order through the station's drift watch: would it alarm?")
    s.add_argument("--bundle", required=True, help="bundle folder (schema 2: it carries the enrollment baseline)")
    s.add_argument("--images", required=True, help="an image folder, replayed in name order (searched recursively)")
    s.add_argument("--station-config", help="take the stability and gate settings from this station config")
    s.add_argument("--plot", help="write the index, part by part, as a PNG here")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_stability)

    r = sub.add_parser("recalibrate", help="update a bundle with new normal images (after drift or a changeover)")
    r.add_argument("--bundle", required=True, help="the running bundle (its enrollment.pt is needed)")
    r.add_argument("--normals", required=True, help="folder of confirmed new normals (e.g. from "
                                                      "`lineguard-station export-evidence --capture ID`)")
    r.add_argument("--out", required=True, help="folder for the new bundle version")
    r.add_argument("--mode", choices=["incremental", "rebuild"], default="incremental",
                   help="incremental: embed only the new normals and merge them into the bank (default); "
                        "rebuild: re-enroll old + new from scratch")
    r.add_argument("--old-data", help="rebuild only: the original training folder (default: data.dir of the params)")
    r.add_argument("--include-flagged", action="store_true",
                   help="keep new normals that stand out as possible defects (they are listed and left out otherwise)")
    r.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    add_params_args(r)
    r.set_defaults(func=cmd_recalibrate)

    d = sub.add_parser("drift-report", help="Evidently drift report of a station's synced evidence, once")
    d.add_argument("--evidence", required=True, help="sync target: a folder, file:// or s3:// URL (records.jsonl "
                                                       "per station below it)")
    d.add_argument("--bundle", required=True, help="the bundle whose baseline is the reference")
    d.add_argument("--out", required=True, help="HTML report to write (a trend plot and JSON go beside it)")
    d.add_argument("--station", help="only this station id")
    d.add_argument("--hours", type=float, default=24.0, help="window: the last N hours of evidence (default 24)")
    d.add_argument("--cron", help="instead of once, schedule it, e.g. '0 2 * * *' (needs `lineguard scheduler start`)")
    d.add_argument("--name", default="drift-report", help="the scheduled deployment's name")
    add_params_args(d)
    d.set_defaults(func=cmd_drift_report)


def cmd_stability(args: argparse.Namespace) -> int:
    """Would the station have alarmed on this folder, and after how many parts?"""
    require_bundle(args.bundle)
    from serving.drift.stability import StabilityConfig
    from serving.engine.anomaly import AnomalyEngine
    from serving.station.replay import replay_paths
    from serving.station.stability_check import check_stability, frames_of

    cfg, rules = StabilityConfig(), None
    if args.station_config:
        from serving.config import load_config

        sc = load_config(args.station_config)
        cfg, rules = sc.stability, sc.gate
    paths = replay_paths(Path(args.images))
    engine = AnomalyEngine.load(args.bundle)
    run = check_stability(engine, frames_of(paths), cfg, rules)
    out = run.summary()
    if args.plot:
        from flows.drift.plots import stability_trend

        out["plot"] = str(stability_trend({"stability index": run.index}, cfg.alert_below, args.plot,
                                          f"{Path(args.images).name} through {engine.bundle.manifest.bundle_version}"))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['n']} parts: Stability Index {out['stability_index']:.0f} at the end, minimum {out['min_index']:.0f}")
    if out["alert"]:
        print(f"ALERT at part {out['first_alert_at']} ({Path(paths[out['first_alert_at']]).name}), "
              f"moved by {out['alert_component']}")
    else:
        print(f"no alert (alert below {cfg.alert_below:g})")
    for name, c in out["components"].items():
        print(f"  {name:<14} {c['score']:6.1f}  {c['detail']}")
    return 0


def cmd_recalibrate(args: argparse.Namespace) -> int:
    """A new bundle version from the old one and new normals; before/after figures."""
    require_bundle(args.bundle)
    normals = Path(args.normals)
    if not normals.is_dir():
        raise ConfigError(f"{normals}: no such folder of new normals (--normals)")
    from flows.cli.common import fresh_output

    fresh_output(args.out, args.force)
    params = load(args)
    from flows.anomaly.recalibrate import recalibrate

    result = recalibrate(args.bundle, normals, args.out, params, mode=args.mode, old_data=args.old_data,
                         include_flagged=args.include_flagged, progress=not args.json)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(result.text())
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_drift_report(args: argparse.Namespace) -> int:
    """The Evidently drift report of a window of synced evidence against the bundle's baseline."""
    require_bundle(args.bundle)
    params = load(args)
    parameters = {"evidence": args.evidence, "bundle": str(Path(args.bundle).resolve()), "out": str(Path(args.out).resolve()),
                  "station": args.station, "hours": args.hours}
    if args.cron:
        from flows.orchestration.scheduler import add_schedule

        folder = Path(args.out).resolve()
        folder = folder.parent if folder.suffix == ".html" else folder  # a timestamped report per run
        spec = add_schedule(args.name, "drift-report", args.cron, {**parameters, "out": str(folder)})
        print(f"scheduled {spec.name}: drift-report at '{args.cron}' (UTC); each run writes "
              f"{folder}/drift-<time>.html and logs it to MLflow; see `lineguard scheduler status`")
        return 0
    from flows.drift.report import drift_report

    result = drift_report(args.evidence, args.bundle, args.out, station=args.station, hours=args.hours,
                          tracking=params.tracking)
    print(json.dumps(result) if getattr(args, "json", False) else
          f"drift report: {result['html']} ({result['n_parts']} parts of {', '.join(result['stations'])}; "
          f"{result['drifted_columns']} of {result['n_columns']} figures drifted; embeddings drift "
          f"{'YES' if result['embedding_drift'] else 'no'})")
    return 0
