"""Evaluate a bundle on a data set's ``test/`` folder through the serving engine.

It inspects with exactly the code the station runs (``serving.station.inspect``: the
engine, then the gate's ``decide()`` with the same rules), imports no torch, and reports
image AUROC (with DeLong's 95 % interval), pixel AUROC where masks exist, and -- from the
gate's verdicts -- the false-reject rate on good parts and the escape rate on defective ones
(with its exact binomial interval), overall and per defect type. When defects are present it
also compares thresholds for other false-reject targets.

>>> report = evaluate("models/elpv/bundle", "data/elpv")   # doctest: +SKIP
>>> sorted(k for k in report if k in REQUIRED_KEYS)        # doctest: +SKIP
['escape_rate', 'frr', 'image_auroc', 'n_defect', 'n_good', 'pixel_auroc', 'threshold']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.anomaly.calibrate import image_threshold, rate_above
from flows.data.dataset import scan_dataset
from flows.progress import progress as progress_bar
from flows.evaluation.metrics import auroc, auroc_interval, percentiles
from serving.engine.anomaly import AnomalyEngine
from serving.images import read_image, read_mask
from serving.engine.preprocess import Roi, crop_roi, resize
from serving.errors import ImageError
from serving.gate import GateRules, History
from serving.station.inspect import inspect

REQUIRED_KEYS = ("image_auroc", "pixel_auroc", "frr", "escape_rate", "threshold", "n_good", "n_defect")
SWEEP_FRR = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)


@dataclass
class Scored:
    """One inspected test image: the engine's output and the gate's verdict."""

    path: Path
    label: int
    defect_type: str
    score: float
    anomaly_map: np.ndarray
    crop: np.ndarray
    verdict: str
    rule: str


def score_test_set(engine: AnomalyEngine, rules: GateRules, data_dir: str | Path, *,
                   progress: bool = True) -> tuple[list[Scored], list[float], list[str]]:
    """Inspect every test image in order at batch 1: (results, per-image latency ms, unreadable files)."""
    ds = scan_dataset(data_dir, need_train=False, need_test=True)
    history = History(rules.persistence_m)
    out, lat, bad = [], [], []
    for s in progress_bar(ds.test, desc="evaluate", unit="img", enabled=progress):
        try:
            img = read_image(s.path)
        except ImageError as exc:
            bad.append(str(exc))
            continue
        insp = inspect(engine, rules, img, history=history.window(), source=str(s.path))
        history.push(insp.decision)
        if insp.result is None:
            bad.append(f"{s.path}: {insp.decision.reasons[0]}")
            continue
        lat.append(insp.latency_ms["preprocess"] + insp.latency_ms["inference"])
        r = insp.result
        out.append(Scored(s.path, s.label, s.defect_type, r.score, r.anomaly_map, r.crop, insp.decision.verdict,
                          insp.decision.rule))
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


def verdict_rates(failed: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """False-reject rate on good and escape rate on defective from the gate's verdicts (``failed`` = FAIL)."""
    return {"frr": float(failed[labels == 0].mean()) if np.any(labels == 0) else 0.0,
            "escape_rate": float(1.0 - failed[labels == 1].mean()) if np.any(labels == 1) else None}


def escape_interval(n_escaped: int, n_defect: int) -> list[float] | None:
    """The escape rate's exact (Clopper-Pearson) 95 % interval: on 100 defects, 37 escapes is 28-47 %."""
    if not n_defect:
        return None
    from scipy.stats import binomtest

    ci = binomtest(n_escaped, n_defect).proportion_ci(0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def frr_check(observed: float, n_rejected: int, n_good: int, thr) -> dict:
    """The calibrated promise against the test goods: expected FRR, its 95 % interval, whether the observed FRR lies
    inside it, and the binomial p-value of seeing that many rejects if the promise holds."""
    if thr.frr_expected is None or not n_good:
        return {"frr_expected": thr.frr_expected, "frr_interval": thr.frr_interval, "frr_inside_interval": None,
                "frr_binomial_p": None}
    from scipy.stats import binomtest

    lo, hi = thr.frr_interval
    return {"frr_expected": thr.frr_expected, "frr_interval": list(thr.frr_interval),
            "frr_inside_interval": bool(lo <= observed <= hi),
            "frr_binomial_p": float(binomtest(n_rejected, n_good, thr.frr_expected).pvalue)}


def evaluate(bundle_dir: str | Path, data_dir: str | Path, *, progress: bool = True, keep: bool = False,
             rules: GateRules | None = None, roi: str | None = None, backend: str = "auto") -> dict:
    """Inspect ``data_dir/test`` with the bundle (and a station's gate ``rules``) and return the metrics;
    ``backend`` as :class:`AnomalyEngine` takes it (``exact``: the whole graph, without the search index)."""
    data_dir = Path(data_dir)
    engine = AnomalyEngine.load(bundle_dir, backend=backend)
    if roi:
        engine.roi = Roi.parse(roi)
    thr = engine.thresholds
    rules = (rules or GateRules()).with_calibration(thr.image, thr.pixel)
    results, lat, bad = score_test_set(engine, rules, data_dir, progress=progress)
    scores = np.array([r.score for r in results])
    labels = np.array([r.label for r in results])
    failed = np.array([r.verdict == "FAIL" for r in results])
    has_masks = (data_dir / "ground_truth").is_dir() and bool(labels.any())
    pixel_auroc = None
    if has_masks:
        masks = np.stack([_mask_for(engine, data_dir, r) for r in results])
        pixel_auroc = auroc(masks, np.stack([r.anomaly_map for r in results]))
    at = verdict_rates(failed, labels)
    per_type = {}
    for t in sorted({r.defect_type for r in results}):
        sel = np.array([r.defect_type == t for r in results])
        key = "frr" if t == "good" else "escape_rate"
        per_type[t] = {"n": int(sel.sum()), key: verdict_rates(failed[sel], labels[sel])[key]}
    sweep = []
    if labels.any() and len(thr.normal_scores) >= 2:
        for frr in SWEEP_FRR:
            t, _ = image_threshold(np.array(thr.normal_scores), frr)
            sweep.append({"target_frr": frr, "threshold": t, **metrics_at(scores, labels, t)})
    good, defect = labels == 0, labels == 1
    counts = {"good_pass": int((good & ~failed).sum()), "good_fail": int((good & failed).sum()),
              "defect_fail": int((defect & failed).sum()), "defect_pass": int((defect & ~failed).sum())}
    n_good, n_defect = counts["good_pass"] + counts["good_fail"], counts["defect_fail"] + counts["defect_pass"]
    ci = auroc_interval(labels, scores)
    report = {
        "image_auroc": auroc(labels, scores),
        "image_auroc_interval": list(ci) if ci is not None else None,
        "pixel_auroc": pixel_auroc,
        "frr": at["frr"],
        "escape_rate": at["escape_rate"],
        "escape_interval": escape_interval(counts["defect_pass"], n_defect),
        "threshold": rules.image_threshold,
        "pixel_threshold": rules.pixel_threshold,
        "target_frr": thr.target_frr,
        **frr_check(at["frr"], counts["good_fail"], n_good, thr),
        "n_good": n_good,
        "n_defect": n_defect,
        "counts": counts,
        "verdicts": [{"file": str(r.path), "verdict": r.verdict, "rule": r.rule, "score": r.score} for r in results],
        "per_type": per_type,
        "threshold_sweep": sweep,
        "latency_ms": percentiles(lat),
        "providers": engine.providers,
        "engine": engine.backend.name,  # onnxruntime+ivf: the search index; onnxruntime / tensorrt: the whole graph
        "bundle_version": engine.bundle.manifest.bundle_version,
        "data_dir": str(data_dir),
        "unreadable": bad,
    }
    if keep:
        report["_results"] = results
    return report
