"""Replay a folder of images through engine and gate, in order, and print a PASS/FAIL table.

Every verdict comes from the same :func:`~serving.station.inspect.inspect` the station runs --
threshold, minimum area, persistence, SOP rules, fail-safe -- with the gate rules of a station
config when one is given (else the bundle's calibration and default rules). Images in
sub-folders are labelled by folder name (``good`` = expected PASS), so a replay of a ``test/``
folder shows where the station agrees with the truth.

>>> rows = replay("models/elpv/bundle", "data/elpv/test")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from serving.engine.anomaly import AnomalyEngine
from serving.images import IMAGE_SUFFIXES, read_image
from serving.engine.preprocess import Roi
from serving.errors import ImageError
from serving.gate import GateRules, History
from serving.station.inspect import Inspection, inspect


@dataclass
class ReplayRow:
    """One replayed part."""

    seq: int
    path: Path
    truth: str | None
    score: float | None
    verdict: str
    rule: str
    area_px: float | None
    latency_ms: float
    overlay: Path | None = None
    error: str | None = None


def replay_paths(images: Path) -> list[Path]:
    """Image files under ``images`` (a file, or a folder searched recursively), sorted: the station's order."""
    if images.is_file():
        return [images]
    if not images.is_dir():
        raise ImageError(f"{images}: no such file or folder to replay")
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{images}: no images to replay (.png/.jpg/.bmp/.tif)")
    return paths


def inspect_folder(engine: AnomalyEngine, rules: GateRules, paths: list[Path]) -> Iterator[tuple[Path, Inspection, np.ndarray | None]]:
    """Inspect each image in order, as the station would (persistence counts across them); yield
    (path, inspection, image). An unreadable file is a ``corrupt_frame`` part, as at the station."""
    history = History(rules.persistence_m)
    for path in paths:
        try:
            img, error, detail = read_image(path), None, ""
        except ImageError as exc:
            img, error, detail = None, "corrupt_frame", str(exc)
        insp = inspect(engine, rules, img, history=history.window(), source=str(path), error=error, detail=detail)
        history.push(insp.decision)
        yield path, insp, img


def open_engine(bundle: str | Path, rules: GateRules | None = None, roi: str | None = None) -> tuple[AnomalyEngine, GateRules]:
    """The bundle's engine (ROI overridden if given) and the gate rules completed with its calibration."""
    engine = AnomalyEngine.load(bundle)
    if roi:
        engine.roi = Roi.parse(roi)
    return engine, (rules or GateRules()).with_calibration(engine.thresholds.image, engine.thresholds.pixel)


def replay(bundle: str | Path, images: str | Path, *, overlays: str | Path | None = None, limit: int | None = None,
           rules: GateRules | None = None, roi: str | None = None) -> list[ReplayRow]:
    """Inspect every image at batch 1, in order; write heatmap overlays of FAILs and of escapes to ``overlays``."""
    engine, rules = open_engine(bundle, rules, roi)
    root = Path(images)
    out_dir = Path(overlays) if overlays else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seq, (path, insp, _) in enumerate(inspect_folder(engine, rules, replay_paths(root)[:limit]), start=1):
        truth = path.parent.name if path.parent != root else None
        d = insp.decision
        ms = sum(insp.latency_ms.get(k, 0.0) for k in ("preprocess", "inference"))
        row = ReplayRow(seq, path, truth, insp.score, d.verdict, d.rule, insp.area_px, ms,
                        error=d.reasons[0] if d.rule.startswith("fail_safe") else None)
        escape = truth is not None and truth != "good" and d.verdict == "PASS"
        if out_dir and (d.verdict == "FAIL" or escape) and insp.result is not None:
            row.overlay = out_dir / f"{seq:05d}_{'escape_' if escape else ''}{path.stem}.png"
            cv2.imwrite(str(row.overlay), np.ascontiguousarray(insp.result.overlay(rules.pixel_threshold)[:, :, ::-1]))
        rows.append(row)
    return rows


def format_table(rows: list[ReplayRow], threshold: float) -> str:
    """The PASS/FAIL table as fixed-width text, with a summary line."""
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    lines = [f"{'part':>5}  {'file':<28} {'truth':<8} {'score':>8}  {'verdict':<7} {'rule':<20} {'area px':>8} {'ms':>6}",
             "-" * 100]
    for r in rows:
        flag = ""
        if r.truth is not None and r.verdict != ("PASS" if r.truth == "good" else "FAIL"):
            flag = "  <- false reject" if r.truth == "good" else "  <- escape"
        lines.append(f"{r.seq:>5}  {r.path.name[:28]:<28} {(r.truth or '-')[:8]:<8} {fmt(r.score, '>8.3f'):>8}  "
                     f"{r.verdict:<7} {r.rule[:20]:<20} {fmt(r.area_px, '>8.0f'):>8} {r.latency_ms:>6.1f}{flag}"
                     + (f"  ({r.error})" if r.error else ""))
    n_fail = sum(r.verdict == "FAIL" for r in rows)
    lat = np.array([r.latency_ms for r in rows if not r.error])
    lines.append("-" * 100)
    p50, p99 = (np.percentile(lat, 50), np.percentile(lat, 99)) if lat.size else (float("nan"),) * 2
    lines.append(f"{len(rows)} parts: {len(rows) - n_fail} PASS, {n_fail} FAIL at threshold {threshold:.4g}; "
                 f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms (batch 1, preprocess + inference)")
    return "\n".join(lines)
