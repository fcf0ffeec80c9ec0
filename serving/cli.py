"""``lineguard-station``: the station's command line (lean: no training stack).

>>> main(["verify", "/nonexistent"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import sys

from serving.errors import LineguardError


def _verify(args: argparse.Namespace) -> int:
    from serving.bundle import load_bundle

    b = load_bundle(args.bundle)
    m = b.manifest
    print(f"OK {b.root}: {m.bundle_version} ({m.algorithm}/{m.backbone}), {len(m.files)} files verified, "
          f"threshold {m.thresholds.image:.4g}, TensorRT: {'built' if m.tensorrt.built else 'no'}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from serving.lean import heavy_modules_loaded
    from serving.replay import format_table, replay

    rows = replay(args.bundle, args.images, overlays=args.overlays, limit=args.limit)
    from serving.bundle import load_bundle

    thr = load_bundle(args.bundle, verify_hashes=False).manifest.thresholds.image
    if args.json:
        print(json.dumps([{"seq": r.seq, "file": str(r.path), "truth": r.truth, "score": r.score,
                           "verdict": r.verdict, "area_px": r.area_px, "latency_ms": r.latency_ms,
                           "error": r.error} for r in rows]))
    else:
        print(format_table(rows, thr))
        if args.overlays:
            print(f"heatmap overlays of FAIL parts: {args.overlays}")
    heavy = heavy_modules_loaded()
    print(f"training stack imported by the station: {', '.join(heavy) if heavy else 'none'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The station CLI's argument parser."""
    p = argparse.ArgumentParser(prog="lineguard-station", description="Lineguard station runtime")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify an engine bundle's schema and hashes")
    v.add_argument("bundle")
    v.set_defaults(func=_verify)
    r = sub.add_parser("replay", help="score a folder of images and print a PASS/FAIL table")
    r.add_argument("--bundle", required=True)
    r.add_argument("--images", required=True, help="an image or a folder (searched recursively)")
    r.add_argument("--overlays", help="folder for heatmap overlays of FAIL parts")
    r.add_argument("--limit", type=int)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_replay)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits 2 with a one-line message, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LineguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
