"""``lineguard-station``: the station's command line (lean: no training stack).

>>> main(["verify", "/nonexistent"])  # doctest: +SKIP
"""

from __future__ import annotations

import time

PROCESS_START_NS = time.monotonic_ns()

import argparse  # noqa: E402 - the start time is taken before anything else loads
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

#: set in the station's process before numpy loads, unless the environment already sets them:
#: - pydantic scans every installed package's entry points for its plugins when it builds the first model (~15 ms
#:   of a cold start here, before the first verdict); a station has none. `PYDANTIC_DISABLE_PLUGINS=` lets them.
#: - numpy's OpenBLAS runs the search index's GEMMs on busy-waiting threads beside ONNX Runtime's own pool and the
#:   after-part thread; on a small CPU a preempted second BLAS thread stalls the GEMM. One thread: ELPV at 10
#:   parts/s, trigger -> actuation p99 44-47 -> 34-38 ms, p50 the same (benchmarks/README.md).
PROCESS_ENV = {"PYDANTIC_DISABLE_PLUGINS": "__all__", "OPENBLAS_NUM_THREADS": "1"}
for _name, _value in PROCESS_ENV.items():
    os.environ.setdefault(_name, _value)

from serving.errors import exit_code  # noqa: E402


def _verify(args: argparse.Namespace) -> int:
    from serving.engine.bundle import load_bundle
    from serving.engine.signing import Trust

    if args.config:
        from serving.config import load_config

        trust = load_config(args.config).bundles.trust()
    elif args.trusted_key:
        trust = Trust.from_files(args.trusted_key, allow_unsigned=args.allow_unsigned)
    else:
        trust = None
    b = load_bundle(args.bundle, trust=trust)
    m = b.manifest
    what = (f"threshold {m.thresholds.image:.4g}" if m.thresholds else f"classes {', '.join(m.class_names)}")
    signed = b.signature.describe() if trust is not None else "signature not checked (pass --config or --trusted-key)"
    if m.search is not None:
        from serving.engine.search import IvfIndex, search_files

        IvfIndex.load(search_files(b), probe=m.search.probe)  # its arrays fit together
    print(f"OK {b.root}: {m.bundle_version} ({m.model_kind}, {m.algorithm}/{m.backbone}), {len(m.files)} files "
          f"verified, {signed}, {what}, TensorRT: {'built' if m.tensorrt.built else 'no'}, search: {m.search_summary}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from serving.engine.bundle import load_bundle
    from serving.lean import heavy_modules_loaded
    from serving.station.replay import format_table, replay

    rules = roi = None
    if args.station_config:
        from serving.config import load_config

        cfg = load_config(args.station_config)
        rules, roi = cfg.gate, cfg.roi
    rows = replay(args.bundle, args.images, overlays=args.overlays, limit=args.limit, rules=rules, roi=roi)
    thr = (rules.image_threshold if rules and rules.image_threshold is not None else
           load_bundle(args.bundle, verify_hashes=False).manifest.thresholds.image)
    if args.json:
        print(json.dumps([{"seq": r.seq, "file": str(r.path), "truth": r.truth, "score": r.score,
                           "verdict": r.verdict, "rule": r.rule, "area_px": r.area_px, "latency_ms": r.latency_ms,
                           "error": r.error} for r in rows]))
    else:
        print(format_table(rows, thr))
        if args.overlays:
            print(f"heatmap overlays of FAIL parts: {args.overlays}")
    heavy = heavy_modules_loaded()
    print(f"training stack imported by the station: {', '.join(heavy) if heavy else 'none'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from serving.station import bench

    if args.first_verdict:
        print(json.dumps(bench.first_verdict(args.bundle, args.images)), flush=True)
        return 0
    if args.n < 1:
        from serving.errors import ConfigError

        raise ConfigError("--n must be at least 1")
    r = bench.run_bench(args.bundle, args.images, args.n, cold_runs=args.cold_runs)
    print(json.dumps(r) if args.json else bench.summary(r))
    return 0


def _run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from serving.config import load_config

    cfg = load_config(args.config)  # every config error ends here, before anything starts
    _apply_overrides(cfg, args)
    if not args.no_api:
        from serving.api.auth import refuse_demo_passwords
        from serving.api.serve import check_tls

        refuse_demo_passwords(cfg.api)  # before the engine loads: a line never runs on the demo passwords
        check_tls(cfg.api)
    from serving.station.runtime import Station

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    stop = threading.Event()
    reason = {"why": "finished"}

    def on_signal(signum, _frame) -> None:
        reason["why"] = signal.Signals(signum).name
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    station = Station(cfg, started_ns=PROCESS_START_NS)
    server = None
    try:
        if not args.no_api:
            server = serve_api(station, cfg.api.host, cfg.api.port, wait=False)
            scheme = "https" if cfg.api.tls_cert else "http"
            print(f"operator page: {scheme}://{cfg.api.host}:{cfg.api.port}/"
                  + (" (DEMO: demo passwords allowed)" if cfg.api.demo else ""), flush=True)
        station.start()
        while not stop.is_set() and not station.wait(0.2):
            pass
        if not stop.is_set():
            _summary(station)
            if not args.exit_when_done and server is not None:
                print("replay finished; the operator page stays up (Ctrl-C or SIGTERM to stop)", flush=True)
                stop.wait()
    except BaseException as exc:
        reason["why"] = f"fatal error: {type(exc).__name__}: {exc}"
        raise
    finally:
        # outputs to their safe state on every way out: the end, a signal, or a crash
        pending = station.stop(reason["why"])
        print(f"station stopped ({reason['why']}); reject output off"
              + (f"; {len(pending)} reject pulse(s) not fired: parts {pending}" if pending else ""), flush=True)
        if server is not None:
            server.should_exit = True
    return 0


def _summary(station) -> None:
    st, c = station.state, station.actuator.counts
    print(f"done: {st.frames} parts, {st.counts.get('PASS', 0)} PASS, {st.counts.get('FAIL', 0)} FAIL; "
          f"reject pulses {c['pulses']}, late {c['late']}, missed {c['missed']}, actuator errors {c['errors']}; "
          f"dropped frames {station.source.dropped}; first verdict {st.first_verdict_ms:.0f} ms after process start",
          flush=True)


def _apply_overrides(cfg, args: argparse.Namespace) -> None:
    """Flags and environment beat the file: ports and paths change per machine, not per config."""
    import os

    if args.max_frames:
        cfg.max_frames = args.max_frames
    if args.demo:
        cfg.api.demo = True
    port = args.api_port or os.environ.get("LINEGUARD_API_PORT")
    if port:
        cfg.api.port = int(port)
    plc = args.plc or os.environ.get("LINEGUARD_PLC")
    if plc:
        host, _, p = plc.rpartition(":")
        cfg.actuator.modbus.host, cfg.actuator.modbus.port = host or cfg.actuator.modbus.host, int(p)


def _export_evidence(args: argparse.Namespace) -> int:
    import datetime

    from serving.config import load_config
    from serving.evidence.export import export_capture, export_evidence

    cfg = load_config(args.config)
    if args.capture:
        counts = export_capture(cfg.evidence, cfg.station_id, args.capture, args.out)
        print(f"exported {counts['normal']} confirmed normals of capture {args.capture} to {args.out}/good "
              f"({counts['excluded']} excluded); next: lineguard recalibrate --bundle BUNDLE --normals {args.out} "
              "--out NEW_BUNDLE")
        return 0
    when = lambda text: datetime.datetime.fromisoformat(text).timestamp() if text else None  # noqa: E731
    counts = export_evidence(cfg.evidence, cfg.station_id, args.out, since=when(args.since), until=when(args.until),
                             verdict=args.verdict)
    print(f"exported {counts['records']} records and {counts['images']} decrypted images to {args.out}"
          + (f"; {counts['unreadable_images']} images could not be decrypted" if counts["unreadable_images"] else ""))
    return 0


def _gen_key(args: argparse.Namespace) -> int:
    from serving.evidence.crypto import generate_key

    print(f"wrote {generate_key(args.path)} (keep a copy off the station: evidence cannot be read without it)")
    return 0


def serve_api(station, host: str, port: int, *, wait: bool = True, timeout: float = 30.0):
    """:func:`serving.api.serve.serve_api`, through the CLI: the one module outside the API room that reaches it
    (the pipeline's loop starts its station API here)."""
    from serving.api.serve import serve_api as _serve

    return _serve(station, host, port, wait=wait, timeout=timeout)


def hash_password(password: str, iterations: int = 200_000) -> str:
    """The ``password_hash`` a station config's ``api.users`` entry takes (what ``hash-password`` prints)."""
    from serving.api.auth import hash_password as _hash

    return _hash(password, iterations)


def _hash_password(args: argparse.Namespace) -> int:
    import getpass

    pw = args.password or getpass.getpass("password: ")
    print(hash_password(pw))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The station CLI's argument parser."""
    p = argparse.ArgumentParser(prog="lineguard-station", description="Lineguard station runtime")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify an engine bundle: signature (signer), schema, paths and hashes")
    v.add_argument("--config", help="check the signature against this station config's bundles.trusted_keys")
    v.add_argument("--trusted-key", action="append", default=[], metavar="PUB",
                   help="a trusted Ed25519 public key (repeatable), instead of --config")
    v.add_argument("--allow-unsigned", action="store_true", help="with --trusted-key: accept an unsigned bundle")
    v.add_argument("bundle", help="bundle folder")
    v.set_defaults(func=_verify)
    r = sub.add_parser("replay", help="score a folder of images and print a PASS/FAIL table")
    r.add_argument("--bundle", required=True, help="bundle folder")
    r.add_argument("--images", required=True, help="an image or a folder (searched recursively)")
    r.add_argument("--overlays", help="folder for heatmap overlays of FAIL parts")
    r.add_argument("--limit", type=int, help="replay only the first N images")
    r.add_argument("--station-config", help="take gate rules and ROI from this station config (as the station would)")
    r.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    r.set_defaults(func=_replay)
    b = sub.add_parser("bench", help="latency of the whole scoring path vs the backbone alone, and cold start")
    b.add_argument("--bundle", required=True, help="bundle folder")
    b.add_argument("--images", required=True, help="a folder of images like the line's (searched recursively)")
    b.add_argument("--n", type=int, default=200, help="parts to time (default 200)")
    b.add_argument("--cold-runs", type=int, default=3, help="fresh processes for the cold-start figures (0: skip)")
    b.add_argument("--first-verdict", action="store_true", help=argparse.SUPPRESS)  # the cold-start child
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_bench)
    s = sub.add_parser("run", help="run the station from a config file")
    s.add_argument("--config", required=True, help="station config YAML (see station.example.yaml)")
    s.add_argument("--no-api", action="store_true", help="no operator page / API")
    s.add_argument("--max-frames", type=int, help="stop after this many parts")
    s.add_argument("--exit-when-done", action="store_true", help="exit when a replay ends")
    s.add_argument("--api-port", type=int, help="operator page / API port (or LINEGUARD_API_PORT)")
    s.add_argument("--plc", help="PLC address host:port (or LINEGUARD_PLC), overriding actuator.modbus")
    s.add_argument("--demo", action="store_true", help="a demo station: allow the demo passwords (api.demo); the "
                                                       "page says DEMO")
    s.set_defaults(func=_run)
    e = sub.add_parser("export-evidence", help="records and decrypted pictures for offline study (needs the key)")
    e.add_argument("--config", required=True, help="the station's config (where its evidence and key are)")
    e.add_argument("--out", required=True, help="folder to write records.jsonl, records.csv and images/")
    e.add_argument("--since", help="ISO time, e.g. 2026-11-27T08:00")
    e.add_argument("--until", help="ISO time")
    e.add_argument("--verdict", choices=["PASS", "FAIL"], help="only this verdict")
    e.add_argument("--capture", help="instead: the confirmed normals of this recalibration capture, as crops in OUT/good")
    e.set_defaults(func=_export_evidence)
    k = sub.add_parser("gen-key", help="create an AES-256 key file for the evidence buffer")
    k.add_argument("path", help="key file to create (refuses to overwrite)")
    k.set_defaults(func=_gen_key)
    h = sub.add_parser("hash-password", help="hash a password for api.users in the station config")
    h.add_argument("--password", help="(prompted if omitted)")
    h.set_defaults(func=_hash_password)
    sub.add_parser("plc-sim", help="Modbus TCP PLC simulator (lineguard-station plc-sim --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits 2 with a one-line message, never a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plc-sim"]:
        from serving.lineio.plcsim import main as plcsim_main

        return plcsim_main(argv[1:])
    args = build_parser().parse_args(argv)
    return exit_code(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
