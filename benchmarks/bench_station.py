"""Station benchmark: decision latency, sustained rate, cold start, RSS and reject-pulse timing.

Runs the real station (ELPV bundle from `bash scripts/demo.sh`) on replayed cells against the
project's Modbus PLC simulator on 127.0.0.1, each measurement in its own process. The replay decodes its
images at start (``source.preload_mb``), so "capture" is the hand-over of a frame, as from a camera; the
cold-start run decodes per trigger, so its figure holds no decoding of the whole folder.

    .venv/bin/python benchmarks/bench_station.py [--bundle models/elpv/bundle] [--frames 120]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _trust(bundle: str, tmp: Path) -> dict:
    """The station's bundles section: the pipeline's key for a signed bundle, else unsigned allowed (a benchmark
    bundle exported without a signing key; the station then shows its unsigned warning, which costs nothing)."""
    pub = ROOT / "keys" / "pipeline.pub"
    store = {"store": str(tmp / "bundle-store")}
    if (Path(bundle) / "manifest.sig").exists() and pub.exists():
        return {**store, "trusted_keys": [str(pub)]}
    return {**store, "allow_unsigned": True}


def _config(tmp: Path, bundle: str, images: str, port: int, rate: float, frames: int, fail_all: bool,
            detector: str | None = None, preload: bool = True) -> Path:
    import yaml

    from serving.evidence.crypto import generate_key

    key = tmp / "k.key"
    if not key.exists():
        generate_key(key)
    cfg = {
        "station_id": "bench", "bundle": bundle, "max_frames": frames,
        # decoded at start: a trigger then hands over pixels, as a camera does (not a PNG file to decode)
        "source": {"kind": "replay", "path": images, "rate_hz": rate, "loop": True, "queue_size": 2,
                   **({"preload_mb": 4096} if preload else {})},
        "gate": {"sop": [{"name": "bench-all-fail", "action": "fail_all"}] if fail_all else [], "deadline_ms": 145},
        "actuator": {"kind": "modbus", "delay_ms": 150, "pulse_ms": 30, "modbus": {"port": port}},
        "evidence": {"dir": str(tmp / f"ev-{rate}-{time.monotonic_ns()}"), "key_file": str(key), "pass_sample_rate": 0.0},
        "api": {"audit_log": str(tmp / "audit.jsonl")},
        "bundles": _trust(bundle, tmp),
    }
    if detector:
        classes = json.loads((Path(detector) / "manifest.json").read_text())["class_names"]
        cfg.update(detector_bundle=detector, classes=classes)
    path = tmp / f"station-{rate}{'-det' if detector else ''}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def child(config: str) -> None:
    """Run one station in this process; print its records' latencies and counters as JSON."""
    import resource

    from serving.config import load_config
    from serving.station.runtime import Station

    st = Station(load_config(config)).start()
    st.wait()
    recs = st.evidence.query(limit=100_000, order="seq")
    out = {"records": [{"seq": r.seq, "t": r.t_trigger_ns, "lat": r.latency_ms, "verdict": r.verdict}
                       for r in recs],
           "dropped": st.source.dropped, "late_frames": st.source.late, "actuation": st.actuator.counts,
           "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    st.stop()
    print("RESULT " + json.dumps(out), flush=True)


def run_child(config: Path) -> dict:
    from serving.cli import PROCESS_ENV

    # the station child runs Station in this script, not through lineguard-station: give it that command's settings
    out = subprocess.run([sys.executable, __file__, "--child", str(config)], capture_output=True, text=True,
                         env={**PROCESS_ENV, **os.environ})
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(line[-1][7:])


def _stages(lat: list[dict]) -> dict:
    """p50/p99 per stage over the records' latency dicts (stages a record lacks are left out)."""
    from flows.evaluation.metrics import percentiles

    names = ("capture", "preprocess", "inference", "detector", "gate", "actuation", "total")
    return {s: percentiles([x[s] for x in lat if s in x]) for s in names if any(s in x for x in lat)}


def pulse_errors(records: list[dict], edges_path: Path, since_ns: int) -> tuple[list[float], list[float]]:
    from services import coil_edges

    edges = [(t, v) for t, v in coil_edges(edges_path, 0) if t >= since_ns]
    ons = [t for t, v in edges if v]
    offs = [t for t, v in edges if not v]
    start_err, width_err = [], []
    for r in records:
        if r["verdict"] != "FAIL":
            continue
        expected = r["t"] + 150_000_000
        on = min(ons, key=lambda t: abs(t - expected), default=None)
        if on is None or abs(on - expected) > 50_000_000:
            continue
        off = min((t for t in offs if t > on), default=None)
        start_err.append((on - expected) / 1e6)
        if off:
            width_err.append((off - on) / 1e6 - 30.0)
    return start_err, width_err


def cold_start(config: Path, runs: int = 3) -> tuple[float, float]:
    """(median ms from process spawn to the first verdict line, median ms reported from inside the process)."""
    outside, inside = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen([str(Path(sys.executable).parent / "lineguard-station"), "run", "--config", str(config),
                                 "--no-api", "--max-frames", "1", "--exit-when-done"], stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if " part 1 " in line:
                outside.append((time.monotonic() - t0) * 1e3)
            m = re.search(r"first verdict (\d+) ms", line)
            if m:
                inside.append(float(m.group(1)))
        proc.wait()
    return float(np.median(outside)), float(np.median(inside))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=str(ROOT / "models" / "elpv" / "bundle"))
    ap.add_argument("--images", default=str(ROOT / "data" / "elpv" / "test"))
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--rates", default="8,12,16,20,25", help="sustained-rate runs ('' to skip)")
    ap.add_argument("--latency-rate", type=float, default=8.0, help="parts/s of the latency run (every part a FAIL)")
    ap.add_argument("--detector", help="also time the station with this detector bundle beside the anomaly model")
    args = ap.parse_args()
    # the station resolves relative paths against its config file, which lives in a temporary folder
    args.bundle, args.images = str(Path(args.bundle).resolve()), str(Path(args.images).resolve())
    args.detector = str(Path(args.detector).resolve()) if args.detector else None
    if not (Path(args.bundle) / "manifest.json").is_file():
        sys.exit(f"{args.bundle}: no bundle; run `bash scripts/demo.sh` first")
    from services import plc_sim

    from flows.evaluation.metrics import percentiles

    tmp = Path(tempfile.mkdtemp(prefix="lg-bench-"))
    results = {}
    with plc_sim(tmp) as (port, edges):
        cfg = _config(tmp, args.bundle, args.images, port, args.latency_rate, args.frames, fail_all=True)
        since = time.monotonic_ns()
        r = run_child(cfg)
        lat = [x["lat"] for x in r["records"]]
        stages = _stages(lat)
        start_err, width_err = pulse_errors(r["records"], edges, since)
        results["latency"] = stages
        results["pulse"] = {"n": len(start_err), "start_abs": percentiles(np.abs(start_err)),
                            "start_signed_p50": float(np.median(start_err)), "width_abs": percentiles(np.abs(width_err))}
        results["rss_mb"] = r["rss_mb"]
        results["late"] = r["actuation"]["late"]
        if args.detector:  # same parts, same rate, the detector added: its own cost and what it does to the total
            rd = run_child(_config(tmp, args.bundle, args.images, port, args.latency_rate, args.frames, fail_all=True,
                                   detector=args.detector))
            results["with_detector"] = _stages([x["lat"] for x in rd["records"]])
            results["with_detector_rss_mb"] = rd["rss_mb"]
        sustained, totals = {}, {}
        for rate in [float(x) for x in args.rates.split(",") if x]:
            rr = run_child(_config(tmp, args.bundle, args.images, port, rate, int(rate * 8), fail_all=False))
            sustained[rate] = {"dropped": rr["dropped"], "late_frames": rr["late_frames"], "late_decisions": rr["actuation"]["late"]}
            totals[rate] = percentiles([x["lat"]["total"] for x in rr["records"] if "total" in x["lat"]])
        results["sustained"] = sustained
        results["cold_start_ms"] = cold_start(_config(tmp, args.bundle, args.images, port, 8, 1, fail_all=False,
                                                            preload=False))
    ok_rates = [r for r, v in results["sustained"].items() if not any(v.values())]
    if args.detector:
        print(f"\nwith the detector {Path(args.detector).name} beside the anomaly model (same parts and rate):\n")
        print("| stage | p50 (ms) | p99 (ms) |\n|---|---|---|")
        for s, v in results["with_detector"].items():
            print(f"| {s} | {v['p50']:.1f} | {v['p99']:.1f} |")
        print(f"peak RSS with the detector: {results['with_detector_rss_mb']:.0f} MiB")
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, ONNX Runtime CPU, batch 1, "
          f"bundle {Path(args.bundle).name} ({args.frames} parts at {args.latency_rate:g} Hz, reject delay 150 ms, "
          "pulse 30 ms)\n")
    print("| stage | p50 (ms) | p99 (ms) |\n|---|---|---|")
    for s, v in results["latency"].items():
        name = "total: trigger -> actuation command" if s == "total" else s
        print(f"| {name} | {v['p50']:.1f} | {v['p99']:.1f} |")
    p = results["pulse"]
    print(f"\npulse start error |edge - (trigger + 150 ms)|, {p['n']} pulses: p50 {p['start_abs']['p50']:.2f} ms, "
          f"p99 {p['start_abs']['p99']:.2f} ms (signed median {p['start_signed_p50']:+.2f} ms)")
    print(f"pulse width error |width - 30 ms|: p50 {p['width_abs']['p50']:.2f} ms, p99 {p['width_abs']['p99']:.2f} ms")
    print(f"sustained rate without drops or late decisions: {max(ok_rates) if ok_rates else 'none'} Hz "
          f"(tried {', '.join(f'{k:g} Hz: {v}' for k, v in results['sustained'].items())})")
    for rate, v in totals.items():
        print(f"  at {rate:g} Hz (real verdicts): trigger -> actuation command p50 {v['p50']:.1f} ms, p99 {v['p99']:.1f} ms")
    out, inside = results["cold_start_ms"]
    print(f"cold start to first verdict: {out:.0f} ms from process spawn ({inside:.0f} ms after the interpreter "
          f"started running lineguard-station)")
    print(f"station peak RSS: {results['rss_mb']:.0f} MiB; late decisions in the latency run: {results['late']}")
    (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "out" / "station.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        import logging

        logging.disable(logging.INFO)
        child(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
