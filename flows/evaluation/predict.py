"""``lineguard predict``: verdicts for a folder of images, as annotated pictures and a CSV.

Each image is inspected as the station would (engine and gate, in order), and written as its ROI with
the anomaly heatmap and a banner: verdict, score against the threshold, deciding rule.

>>> predict("models/bottle/bundle", "captures/", "predictions/")   # doctest: +SKIP
(PosixPath('predictions/predictions.csv'), [...])
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from serving.engine.preprocess import crop_roi, heatmap_overlay
from serving.gate import GateRules
from serving.station.replay import inspect_folder, open_engine, replay_paths


@dataclass
class Prediction:
    """One image's verdict."""

    file: str
    verdict: str
    rule: str
    score: float | None
    area_px: float | None
    image: str | None


def annotate(image: np.ndarray | None, roi, amap, pixel_threshold: float, text: str, fail: bool) -> np.ndarray:
    """The ROI with its heatmap (or a grey box when there is none) under a verdict banner, as BGR."""
    if image is None or amap is None:
        canvas = np.full((240, 320, 3), 60, np.uint8)
    else:
        canvas = heatmap_overlay(crop_roi(image, roi), amap, pixel_threshold)[:, :, ::-1].copy()
    h, w = canvas.shape[:2]
    bar = max(24, h // 12)
    out = np.vstack([np.full((bar, w, 3), (27, 18, 179) if fail else (42, 127, 27), np.uint8), canvas])
    cv2.putText(out, text, (6, int(bar * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, bar / 40, (255, 255, 255), max(1, bar // 20),
                cv2.LINE_AA)
    return out


def predict(bundle: str | Path, images: str | Path, out: str | Path, *, rules: GateRules | None = None,
            roi: str | None = None) -> tuple[Path, list[Prediction]]:
    """Write ``out/<name>.png`` for every image and ``out/predictions.csv``; return the CSV path and the rows."""
    engine, rules = open_engine(bundle, rules, roi)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(images)
    rows = []
    for path, insp, img in inspect_folder(engine, rules, replay_paths(root)):
        d = insp.decision
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        score = "n/a" if insp.score is None else f"{insp.score:.3g}/{rules.image_threshold:.3g}"
        amap = insp.result.anomaly_map if insp.result is not None else None
        pic = annotate(img, engine.roi, amap, rules.pixel_threshold, f"{d.verdict} {score} {d.rule}", d.verdict == "FAIL")
        target = out / rel.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), pic)
        rows.append(Prediction(str(rel), d.verdict, d.rule, insp.score, insp.area_px, str(target)))
    csv_path = out / "predictions.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "verdict", "rule", "score", "area_px", "annotated"])
        for r in rows:
            w.writerow([r.file, r.verdict, r.rule, "" if r.score is None else f"{r.score:.6g}",
                        "" if r.area_px is None else f"{r.area_px:.0f}", r.image])
    return csv_path, rows
