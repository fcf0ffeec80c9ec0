"""Evaluate a bundle on a data set's ``test/`` folder through the serving engine.

It scores with exactly the code the station runs (``serving.AnomalyEngine``),
imports no torch, and reports image AUROC, pixel AUROC where masks exist, and
-- at the calibrated threshold -- the false-reject rate on good parts and the
escape rate on defective ones, overall and per defect type. When defects are
present it also compares thresholds for other false-reject targets.

>>> report = evaluate("models/elpv/bundle", "data/elpv")   # doctest: +SKIP
>>> sorted(k for k in report if k in REQUIRED_KEYS)        # doctest: +SKIP
['escape_rate', 'frr', 'image_auroc', 'n_defect', 'n_good', 'pixel_auroc', 'threshold']
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from flows.calibrate import image_threshold, rate_above
from flows.dataset import scan_dataset
from flows.metrics import auroc, percentiles
from serving.engine import AnomalyEngine
from serving.errors import ImageError
from serving.images import read_image, read_mask
from serving.preprocess import crop_roi, resize

REQUIRED_KEYS = ("image_auroc", "pixel_auroc", "frr", "escape_rate", "threshold", "n_good", "n_defect")
SWEEP_FRR = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)


@dataclass
class Scored:
    """One scored test image."""

    path: Path
    label: int
    defect_type: str
    score: float
    anomaly_map: np.ndarray
    crop: np.ndarray


def score_test_set(engine: AnomalyEngine, data_dir: str | Path, *, progress: bool = True) -> tuple[list[Scored], list[float], list[str]]:
    """Score every test image at batch 1: (results, per-image latency ms, unreadable files)."""
    ds = scan_dataset(data_dir, need_train=False, need_test=True)
    out, lat, bad = [], [], []
    for s in tqdm(ds.test, desc="evaluate", unit="img", disable=not progress):
        try:
            img = read_image(s.path)
        except ImageError as exc:
            bad.append(str(exc))
            continue
        t = time.perf_counter()
        r = engine.infer(img, source=str(s.path))
        lat.append((time.perf_counter() - t) * 1e3)
        out.append(Scored(s.path, s.label, s.defect_type, r.score, r.anomaly_map, r.crop))
    return out, lat, bad


def _mask_for(engine: AnomalyEngine, data_dir: Path, s: Scored) -> np.ndarray:
    if not s.label:
        return np.zeros(s.anomaly_map.shape, bool)
    mask = read_mask(data_dir / "ground_truth" / s.defect_type / f"{s.path.stem}_mask.png")
    mask = crop_roi(mask.astype(np.uint8), engine.roi)
    return resize(mask, *s.anomaly_map.shape, nearest=True) > 0


def metrics_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """False-reject rate on good and escape rate on defective at ``threshold`` (score > threshold fails)."""
    return {"frr": rate_above(scores[labels == 0], threshold),
            "escape_rate": 1.0 - rate_above(scores[labels == 1], threshold) if np.any(labels == 1) else None}


def evaluate(bundle_dir: str | Path, data_dir: str | Path, *, progress: bool = True, keep: bool = False) -> dict:
    """Score ``data_dir/test`` with the bundle and return the metrics (see module doc)."""
    data_dir = Path(data_dir)
    engine = AnomalyEngine.load(bundle_dir)
    thr = engine.thresholds
    results, lat, bad = score_test_set(engine, data_dir, progress=progress)
    scores = np.array([r.score for r in results])
    labels = np.array([r.label for r in results])
    has_masks = (data_dir / "ground_truth").is_dir() and bool(labels.any())
    pixel_auroc = None
    if has_masks:
        masks = np.stack([_mask_for(engine, data_dir, r) for r in results])
        pixel_auroc = auroc(masks, np.stack([r.anomaly_map for r in results]))
    at = metrics_at(scores, labels, thr.image)
    per_type = {}
    for t in sorted({r.defect_type for r in results}):
        sel = np.array([r.defect_type == t for r in results])
        key = "frr" if t == "good" else "escape_rate"
        per_type[t] = {"n": int(sel.sum()), key: metrics_at(scores[sel], labels[sel], thr.image)[key]}
    sweep = []
    if labels.any() and len(thr.normal_scores) >= 2:
        for frr in SWEEP_FRR:
            t, _ = image_threshold(np.array(thr.normal_scores), frr)
            sweep.append({"target_frr": frr, "threshold": t, **metrics_at(scores, labels, t)})
    report = {
        "image_auroc": auroc(labels, scores),
        "pixel_auroc": pixel_auroc,
        "frr": at["frr"],
        "escape_rate": at["escape_rate"],
        "threshold": thr.image,
        "pixel_threshold": thr.pixel,
        "target_frr": thr.target_frr,
        "n_good": int((labels == 0).sum()),
        "n_defect": int((labels == 1).sum()),
        "counts": {
            "good_pass": int(((labels == 0) & (scores <= thr.image)).sum()),
            "good_fail": int(((labels == 0) & (scores > thr.image)).sum()),
            "defect_fail": int(((labels == 1) & (scores > thr.image)).sum()),
            "defect_pass": int(((labels == 1) & (scores <= thr.image)).sum()),
        },
        "per_type": per_type,
        "threshold_sweep": sweep,
        "latency_ms": percentiles(lat),
        "providers": engine.providers,
        "bundle_version": engine.bundle.manifest.bundle_version,
        "unreadable": bad,
    }
    if keep:
        report["_results"] = results
    return report
