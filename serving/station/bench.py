"""``lineguard-station bench``: the serving figures of one bundle on this machine, as a station runs it.

- ``p50_ms`` / ``p99_ms``: the whole scoring path at batch 1 -- ``inspect()`` as the station calls it
  (ROI crop and resize, ONNX Runtime, anomaly map, area, gate), with the station's own thread settings;
- ``exact_p50_ms`` / ``exact_p99_ms`` (bundles with a search index): the same ``inspect()`` with the whole
  graph's exact search instead of the index, in the same alternating blocks, with ``search`` naming the index;
- ``backbone_p50_ms`` / ``backbone_p99_ms``: the backbone alone (the bundle's ``bench/backbone.onnx``, the
  same input), in the same run, in blocks alternating with the whole path so both see the same machine;
- ``load_to_first_verdict_ms``: bundle verification + session + first verdict on a real image, in a fresh
  process with the station's modules and ONNX Runtime imported (what a bundle swap costs);
  ``process_to_first_verdict_ms``: from spawning that process to its first verdict, every import included.

Imports numpy, opencv and onnxruntime only (a station has nothing else).

>>> r = run_bench("models/elpv/bundle", "data/elpv/test", n=100)    # doctest: +SKIP
>>> r["p50_ms"], r["backbone_p50_ms"]                              # doctest: +SKIP
(31.2, 9.8)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from serving.errors import BundleError, DatasetError, LineguardError
from serving.images import read_image


def _pct(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, 50)), float(np.percentile(v, 99))


def first_verdict(bundle: str | Path, image: str | Path) -> dict:
    """Load ``bundle`` and inspect ``image`` once, as a station starting up does; monotonic times in ns."""
    from serving.gate.rules import GateRules
    from serving.station.inspect import inspect
    from serving.engine.anomaly import AnomalyEngine

    # the runtime, as a station has it before it loads any bundle: its import (~30-70 ms here) is in the
    # process figure, not in a bundle load or swap
    import onnxruntime  # noqa: F401

    # a camera hands over pixels: decoding a file is part of neither figure (a replayed PNG costs 1-30 ms to decode)
    frame = np.load(image, allow_pickle=False) if str(image).endswith(".npy") else read_image(image)
    t_load = time.monotonic_ns()
    engine = AnomalyEngine.load(bundle)
    rules = GateRules().with_calibration(engine.thresholds.image, engine.thresholds.pixel)
    insp = inspect(engine, rules, frame, source=str(image))
    t_verdict = time.monotonic_ns()
    return {"t_load_ns": t_load, "t_verdict_ns": t_verdict, "verdict": insp.decision.verdict,
            "rule": insp.decision.rule}


def one_start(bundle: str | Path, image: str | Path, cwd: str | Path | None = None) -> tuple[float, float, float]:
    """One fresh station process (the code under ``cwd``, if given): process spawn -> first verdict, bundle
    load -> first verdict, and the process's CPU time (all its threads), in ms."""
    c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic_ns()
    out = subprocess.run([sys.executable, "-m", "serving.cli", "bench", "--bundle", str(bundle), "--images",
                          str(image), "--first-verdict"], capture_output=True, text=True, timeout=120, cwd=cwd)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode or not line:
        raise BundleError(f"{bundle}: the cold-start process failed: {out.stderr.strip()[-500:]}")
    r = json.loads(line[-1])
    cpu = (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) * 1e3
    return (r["t_verdict_ns"] - t0) / 1e6, (r["t_verdict_ns"] - r["t_load_ns"]) / 1e6, cpu


def cold_start(bundle: str | Path, frame: np.ndarray, runs: int = 3) -> dict:
    """Process spawn -> first verdict, and bundle load -> first verdict, median of ``runs`` fresh processes, each
    handed ``frame`` as raw pixels, as a camera hands them over."""
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-") as tmp:
        raw = Path(tmp) / "frame.npy"
        np.save(raw, frame)
        spawn, load, _ = zip(*(one_start(bundle, raw) for _ in range(runs)))
    return {"process_to_first_verdict_ms": float(np.median(spawn)), "load_to_first_verdict_ms": float(np.median(load))}


def run_bench(bundle: str | Path, images: str | Path, n: int = 200, *, cold_runs: int = 3) -> dict:
    """All the figures of the module docstring for ``bundle`` on the images under ``images``."""
    from serving.engine.anomaly import AnomalyEngine
    from serving.engine.backends import OrtBackend
    from serving.gate.rules import GateRules
    from serving.station.inspect import inspect
    from serving.station.replay import replay_paths

    paths = replay_paths(Path(images))
    frames = []
    for p in paths[: max(1, min(n, 50))]:
        try:
            frames.append((p, read_image(p)))
        except LineguardError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
    if not frames:
        raise DatasetError(f"{images}: none of the images could be read")
    cold = cold_start(bundle, frames[0][1], cold_runs) if cold_runs else {}

    engine = AnomalyEngine.load(bundle)
    engine.warmup()
    m = engine.bundle.manifest
    backbone = None
    if m.bench.get("backbone"):
        backbone = OrtBackend(engine.bundle.root / m.bench["backbone"], providers=engine.providers)
    rules = GateRules().with_calibration(engine.thresholds.image, engine.thresholds.pixel)
    indexed = engine.backend.name.endswith("+ivf")  # a GPU station runs the whole graph even with an index
    exact = AnomalyEngine(engine.bundle, backend="exact") if indexed else None
    whole, bb, ex, stages = [], [], [], {}
    x0 = engine.preprocess(frames[0][1])[1][None]
    if backbone is not None:
        backbone.run(x0)
    if exact is not None:
        exact.warmup()
    # alternating blocks, not single runs: right after a run, ONNX Runtime's pool keeps its threads spinning
    # for a moment, and on a small CPU that would bill one session's spin to the other's next run
    block = 20
    for start in range(0, n, block):
        todo = [frames[i % len(frames)] for i in range(start, min(n, start + block))]
        inspect(engine, rules, todo[0][1])  # untimed, as for the others below: a station runs no other session
        for path, img in todo:
            t = time.perf_counter_ns()
            insp = inspect(engine, rules, img, source=str(path))
            whole.append((time.perf_counter_ns() - t) / 1e6)
            for k, v in insp.latency_ms.items():
                stages.setdefault(k, []).append(v)
        if exact is not None:
            inspect(exact, rules, todo[0][1])  # absorbs the other sessions' spin, as below
            for path, img in todo:
                t = time.perf_counter_ns()
                inspect(exact, rules, img, source=str(path))
                ex.append((time.perf_counter_ns() - t) / 1e6)
        if backbone is not None:
            xs = [engine.preprocess(img)[1][None] for _, img in todo]
            backbone.run(xs[0])  # the block's first run absorbs the other session's spin
            for x in xs:
                t = time.perf_counter_ns()
                backbone.run(x)
                bb.append((time.perf_counter_ns() - t) / 1e6)
    p50, p99 = _pct(whole)
    out = {"bundle": str(bundle), "bundle_version": m.bundle_version, "n": n, "batch": 1,
           "providers": engine.providers, "threads": os.cpu_count(), "p50_ms": p50, "p99_ms": p99,
           "stages": {k: dict(zip(("p50_ms", "p99_ms"), _pct(v))) for k, v in stages.items()},
           "search": (f"ivf: {m.search.cells} cells, {m.search.probe} probed" if indexed else "exact (in the graph)"),
           "exact_p50_ms": _pct(ex)[0] if ex else None, "exact_p99_ms": _pct(ex)[1] if ex else None,
           "backbone_p50_ms": None, "backbone_p99_ms": None, "ratio_to_backbone": None, **cold}
    if bb:
        out["backbone_p50_ms"], out["backbone_p99_ms"] = _pct(bb)
        out["ratio_to_backbone"] = p50 / out["backbone_p50_ms"]
    else:
        out["note"] = "no bench/backbone.onnx in this bundle (exported before it existed): re-export it"
    return out


def summary(r: dict) -> str:
    """The figures for a person."""
    lines = [f"{r['bundle_version']} on {r['providers'][0]}, batch 1, {r['n']} parts:",
             f"  whole scoring path  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  (search: {r['search']})"]
    if r.get("exact_p50_ms") is not None:
        lines.append(f"  ... exact search    p50 {r['exact_p50_ms']:.1f} ms  p99 {r['exact_p99_ms']:.1f} ms  "
                     "(the whole graph, same run)")
    if r["backbone_p50_ms"] is not None:
        lines.append(f"  backbone alone      p50 {r['backbone_p50_ms']:.1f} ms  p99 {r['backbone_p99_ms']:.1f} ms  "
                     f"(whole path = {r['ratio_to_backbone']:.2f}x the backbone)")
    else:
        lines.append(f"  backbone alone      -- {r['note']}")
    for k, v in r["stages"].items():
        lines.append(f"    {k:<12} p50 {v['p50_ms']:.1f} ms  p99 {v['p99_ms']:.1f} ms")
    if "load_to_first_verdict_ms" in r:
        lines.append(f"  cold start: bundle load -> first verdict {r['load_to_first_verdict_ms']:.0f} ms; "
                     f"process spawn -> first verdict {r['process_to_first_verdict_ms']:.0f} ms")
    return "\n".join(lines)
