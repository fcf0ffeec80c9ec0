"""Line I/O benchmark: live-stream freshness, camera watchdog, trigger timestamps, reject-pulse timing.

Everything against real peers on 127.0.0.1: an ffmpeg HTTP/MPEG-TS stream (Debian's ffmpeg), the
project's PLC simulator (its own clock stamps every write, on CLOCK_MONOTONIC like the station).
Pulse and trigger figures are taken twice: with the station's normal load, and with a second,
CPU-bound process running (one core of two taken).

    .venv/bin/python benchmarks/bench_lineio.py [--bundle models/elpv/bundle] [--seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import station_config  # noqa: E402
from services import CameraStream, events, make_video, plc_sim, read_barcode  # noqa: E402

from serving.station.runtime import Station  # noqa: E402

SIM_MAP = {"hr_encoder": 10, "hr_plc_clock": 11, "hr_trigger_count": 12}


def pct(values, q=(50, 99)) -> dict[str, float]:
    v = np.asarray(values, float)
    return {f"p{x}": float(np.percentile(v, x)) if v.size else float("nan") for x in q}


@contextlib.contextmanager
def cpu_hog(on: bool):
    """A second process spinning on one core, or nothing."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def freshness(tmp: Path, bundle: Path, images: Path, seconds: float) -> dict:
    """Verdict age and frames behind live: the station vs OpenCV's plain read() at the same rate."""
    import cv2

    video = make_video(tmp / "parts.mp4", n=int(seconds * 10) + 200, fps=10)
    out = {}
    with contextlib.closing(_Stream(video)) as stream:
        cfg = station_config(tmp / "fresh", bundle, images, source={
            "kind": "opencv", "device": stream.url, "trigger": "free_run", "rate_hz": 3, "max_frame_age_ms": 150})
        st = Station(cfg)
        seen, take = [], st.source.camera.take

        def spy(t_ns, nearest=True):
            shot = take(t_ns, nearest)
            if shot.image is not None:
                seen.append((time.monotonic(), read_barcode(shot.image)))
            return shot

        st.source.camera.take = spy
        st.start()
        time.sleep(seconds)
        recs = st.evidence.query(limit=100_000, order="seq")
        st.stop()
        ok = [r for r in recs if r.score is not None]
        out["verdict_age_ms"] = pct([r.latency_ms["total"] - r.latency_ms["capture"] for r in ok])
        out["inference_ms"] = pct([r.latency_ms["inference"] for r in ok])
        (t0, i0) = seen[0]
        out["frames_behind_live"] = pct([(i0 + (t - t0) * 10) - i for t, i in seen[1:]], (50, 99, 100))
    with contextlib.closing(_Stream(video)) as stream:  # the obvious alternative: OpenCV's read(), 3 reads/s
        cap = cv2.VideoCapture(stream.url, cv2.CAP_FFMPEG)
        ok, frame = cap.read()
        t0, i0, lag = time.monotonic(), read_barcode(frame[:, :, ::-1]), []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(1 / 3)
            ok, frame = cap.read()
            if ok:
                lag.append((i0 + (time.monotonic() - t0) * 10) - read_barcode(frame[:, :, ::-1]))
        cap.release()
        out["opencv_read_frames_behind_after_s"] = {"seconds": seconds, "frames": float(lag[-1]) if lag else None}
    return out


class _Stream(CameraStream):
    def __init__(self, video):
        super().__init__(video)
        self.start()

    def close(self):
        self.stop()


def watchdog(tmp: Path, bundle: Path, images: Path, repeats: int = 3) -> dict:
    """Seconds from killing / freezing the stream to the camera alarm (watchdog 1.0 s)."""
    video = make_video(tmp / "wd.mp4", n=600, fps=10)
    out = {"kill_s": [], "hang_s": [], "recover_s": []}
    with contextlib.closing(_Stream(video)) as stream:
        cfg = station_config(tmp / "wd", bundle, images, source={
            "kind": "opencv", "device": stream.url, "trigger": "free_run", "rate_hz": 3, "watchdog_s": 1.0})
        st = Station(cfg).start()
        for _ in range(repeats):
            for how in ("kill", "hang"):
                _wait(lambda: not st.alarms.is_active("camera") and st.source.camera.silent_s < 0.3, 15)
                time.sleep(0.5)
                t = time.monotonic()
                stream.kill() if how == "kill" else stream.freeze()
                _wait(lambda: st.alarms.is_active("camera"), 10)
                out[f"{how}_s"].append(time.monotonic() - t)
                time.sleep(0.5)
                t = time.monotonic()
                stream.resume() if how == "kill" else stream.thaw()
                _wait(lambda: not st.alarms.is_active("camera"), 15)
                out["recover_s"].append(time.monotonic() - t)
        st.stop()
    return {k: {"max": max(v), "median": float(np.median(v))} for k, v in out.items()}


def _wait(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.01)


def triggers(tmp: Path, bundle: Path, images: Path, mode: str, hog: bool, n: int = 40) -> dict:
    """Station trigger time minus the PLC's own trigger time, in ms."""
    with cpu_hog(hog), plc_sim(tmp, "--trigger-period-ms", "150") as (port, edges):
        cfg = station_config(tmp / f"trig-{mode}-{hog}", bundle, images, max_frames=n,
                             source={"trigger": mode, "trigger_poll_ms": 1},
                             actuator={"kind": "modbus", "modbus": {"port": port, **SIM_MAP}})
        st = Station(cfg).start()
        st.wait(120)
        recs = st.evidence.query(limit=1000, order="seq")[1:]  # the first may have been pending at start-up
        st.stop()
    truth = np.array([e["t_ns"] for e in events(edges, "plc_trigger")])
    got = np.array([r.t_trigger_ns for r in recs])
    nearest = truth[np.abs(truth[None, :] - got[:, None]).argmin(1)]
    err = np.abs(got - nearest) / 1e6
    return {"n": int(len(err)), **pct(err), "max": float(err.max())}


def pulse_timing(tmp: Path, bundle: Path, images: Path, hog: bool, n: int = 80) -> dict:
    """Reject edges as the PLC saw them vs trigger + delay (every part forced to FAIL), 8 parts/s."""
    delay, width = 300, 40
    with cpu_hog(hog), plc_sim(tmp) as (port, edges):
        cfg = station_config(tmp / f"pulse-{hog}", bundle, images, max_frames=n,
                             source={"rate_hz": 8, "loop": True},
                             gate={"sop": [{"name": "all", "action": "fail_all"}], "deadline_ms": 250},
                             actuator={"kind": "modbus", "delay_ms": delay, "pulse_ms": width,
                                       "modbus": {"port": port, **SIM_MAP}})
        st = Station(cfg).start()
        st.wait(120)
        time.sleep(0.5)
        recs = st.evidence.query(limit=1000, order="seq")
        counts = dict(st.actuator.counts)
        st.stop()
    ons = [(e["t_ns"]) for e in events(edges, "coil", 0) if e["values"] == [1]]
    offs = [(e["t_ns"]) for e in events(edges, "coil", 0) if e["values"] == [0]]
    start, widths = [], []
    for r in recs:
        expected = r.t_trigger_ns + delay * 1_000_000
        on = min(ons, key=lambda t: abs(t - expected), default=None)
        if on is None or abs(on - expected) > 50_000_000:
            continue
        off = min((t for t in offs if t > on), default=None)
        start.append((on - expected) / 1e6)
        if off:
            widths.append((off - on) / 1e6 - width)
    return {"pulses": len(start), "start_abs": pct(np.abs(start)), "width_abs": pct(np.abs(widths)),
            "late": counts["late"], "missed": counts["missed"], "pulse_late": counts["pulse_late"],
            "pulse_short": counts["pulse_short"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=str(ROOT / "models" / "elpv" / "bundle"))
    ap.add_argument("--images", default=str(ROOT / "data" / "elpv" / "test"))
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--only", choices=["camera", "triggers", "pulses"], help="run one part only")
    args = ap.parse_args()
    bundle, images = Path(args.bundle), Path(args.images)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle; run `bash scripts/demo.sh` first")
    import logging

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="lg-lineio-"))
    res = {}
    if args.only in (None, "camera"):
        res = {"freshness": freshness(tmp, bundle, images, args.seconds), "watchdog": watchdog(tmp, bundle, images)}
    for hog in (False, True):
        key = "with a CPU hog" if hog else "normal load"
        if args.only in (None, "triggers"):
            res[f"trigger_coil ({key})"] = triggers(tmp, bundle, images, "modbus", hog)
            res[f"trigger_counter ({key})"] = triggers(tmp, bundle, images, "modbus_counter", hog)
        if args.only in (None, "pulses"):
            res[f"pulse ({key})"] = pulse_timing(tmp, bundle, images, hog)
    print(f"\nmachine: {os.cpu_count()} cores; live stream 10 fps (ffmpeg, HTTP/MPEG-TS), station at 3 parts/s\n")
    if "freshness" in res:
        print_camera(res, args.seconds)
    print_table(res)
    (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "out" / f"lineio{'-' + args.only if args.only else ''}.json").write_text(json.dumps(res, indent=2))
    return 0


def print_camera(res: dict, seconds: float) -> None:
    f = res["freshness"]
    print(f"verdict age (verdict time - frame arrival): p50 {f['verdict_age_ms']['p50']:.0f} ms, "
          f"p99 {f['verdict_age_ms']['p99']:.0f} ms (frame period 100 ms; inference p99 {f['inference_ms']['p99']:.0f} ms)")
    print(f"frames behind the live stream: p50 {f['frames_behind_live']['p50']:.1f}, max "
          f"{f['frames_behind_live']['p100']:.1f}; OpenCV's own read() at the same rate: "
          f"{f['opencv_read_frames_behind_after_s']['frames']:.0f} frames behind after {seconds:g} s")
    w = res["watchdog"]
    print(f"camera alarm after a killed stream: median {w['kill_s']['median']:.2f} s, max {w['kill_s']['max']:.2f} s; "
          f"after a hung stream: median {w['hang_s']['median']:.2f} s, max {w['hang_s']['max']:.2f} s "
          f"(watchdog 1.0 s); back to clear after restart: max {w['recover_s']['max']:.2f} s")


def print_table(res: dict) -> None:
    print("\n| measurement | load | n | p50 (ms) | p99 (ms) | max (ms) |\n|---|---|---|---|---|---|")
    for key, v in res.items():
        if key.startswith("trigger"):
            name, load = key.split(" (")
            print(f"| trigger timestamp error, {name.split('_')[1]} | {load[:-1]} | {v['n']} | {v['p50']:.2f} | "
                  f"{v['p99']:.2f} | {v['max']:.2f} |")
    for key, v in res.items():
        if key.startswith("pulse"):
            load = key.split(" (")[1][:-1]
            print(f"| pulse start error | {load} | {v['pulses']} | {v['start_abs']['p50']:.2f} | "
                  f"{v['start_abs']['p99']:.2f} | |")
            print(f"| pulse width error | {load} | {v['pulses']} | {v['width_abs']['p50']:.2f} | "
                  f"{v['width_abs']['p99']:.2f} | |")
    for key, v in res.items():
        if key.startswith("pulse"):
            print(f"{key}: late decisions {v['late']}, missed pulses {v['missed']}, late pulses {v['pulse_late']}, "
                  f"short pulses {v['pulse_short']}")


if __name__ == "__main__":
    sys.exit(main())
