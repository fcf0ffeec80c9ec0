"""Replay a folder of images through the serving engine and print a PASS/FAIL table.

A part fails when its score exceeds the bundle's calibrated image threshold. Images
in sub-folders are labelled by folder name (``good`` = expected PASS), so a replay of
a ``test/`` folder shows where the engine agrees with the truth.

>>> rows = replay("models/elpv/bundle", "data/elpv/test")   # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from serving.engine import AnomalyEngine
from serving.errors import ImageError
from serving.images import IMAGE_SUFFIXES, read_image
from serving.preprocess import anomaly_area


@dataclass
class ReplayRow:
    """One replayed part."""

    seq: int
    path: Path
    truth: str | None
    score: float
    verdict: str
    area_px: float
    latency_ms: float
    overlay: Path | None = None
    error: str | None = None


def replay_paths(images: Path) -> list[Path]:
    """Image files under ``images`` (a file, or a folder searched recursively), sorted."""
    if images.is_file():
        return [images]
    if not images.is_dir():
        raise ImageError(f"{images}: no such file or folder to replay")
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{images}: no images to replay (.png/.jpg/.bmp/.tif)")
    return paths


def replay(bundle: str | Path, images: str | Path, *, overlays: str | Path | None = None, limit: int | None = None) -> list[ReplayRow]:
    """Score every image at batch 1; write heatmap overlays of FAILs to ``overlays``."""
    engine = AnomalyEngine.load(bundle)
    thr = engine.thresholds
    root = Path(images)
    out_dir = Path(overlays) if overlays else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seq, path in enumerate(replay_paths(root)[:limit], start=1):
        truth = path.parent.name if path.parent != root else None
        try:
            img = read_image(path)
        except ImageError as exc:
            # Fail safe: a part whose inspection failed is rejected, with the reason.
            rows.append(ReplayRow(seq, path, truth, float("nan"), "FAIL", 0.0, 0.0, error=str(exc)))
            continue
        t = time.perf_counter()
        res = engine.infer(img, source=str(path))
        ms = (time.perf_counter() - t) * 1e3
        roi_px = engine.roi.w * engine.roi.h if engine.roi else img.shape[0] * img.shape[1]
        verdict = "FAIL" if res.score > thr.image else "PASS"
        row = ReplayRow(seq, path, truth, res.score, verdict, anomaly_area(res.anomaly_map, thr.pixel, roi_px), ms)
        if out_dir and verdict == "FAIL":
            row.overlay = out_dir / f"{seq:05d}_{path.stem}.png"
            cv2.imwrite(str(row.overlay), np.ascontiguousarray(res.overlay(thr.pixel)[:, :, ::-1]))
        rows.append(row)
    return rows


def format_table(rows: list[ReplayRow], threshold: float) -> str:
    """The PASS/FAIL table as fixed-width text, with a summary line."""
    lines = [f"{'part':>5}  {'file':<28} {'truth':<8} {'score':>8}  {'verdict':<7} {'area px':>8} {'ms':>6}",
             "-" * 80]
    for r in rows:
        flag = ""
        if r.truth is not None and r.verdict != ("PASS" if r.truth == "good" else "FAIL"):
            flag = "  <- false reject" if r.truth == "good" else "  <- escape"
        lines.append(f"{r.seq:>5}  {r.path.name[:28]:<28} {(r.truth or '-')[:8]:<8} {r.score:>8.3f}  "
                     f"{r.verdict:<7} {r.area_px:>8.0f} {r.latency_ms:>6.1f}{flag}" + (f"  ({r.error})" if r.error else ""))
    n_fail = sum(r.verdict == "FAIL" for r in rows)
    lat = np.array([r.latency_ms for r in rows if not r.error])
    lines.append("-" * 80)
    lines.append(f"{len(rows)} parts: {len(rows) - n_fail} PASS, {n_fail} FAIL at threshold {threshold:.4g}; "
                 f"latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms (batch 1)")
    return "\n".join(lines)
