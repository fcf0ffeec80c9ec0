"""MLflow tracking and registry: one run per enrollment, the bundle as a model version.

Embedded default: SQLite under ``mlflow/`` with artifacts beside it. At scale, set
``tracking.uri`` to a tracking server (PostgreSQL + S3-compatible artifacts behind it).

>>> run_id = log_enrollment(result, params, "data/elpv")     # doctest: +SKIP
>>> version = register_bundle("models/elpv/bundle", run_id, params.tracking)  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from flows.anomaly.enroll import EnrollResult
from flows.params import Params, TrackingParams
from flows.evaluation.plots import overlay_grid, score_histogram
from serving.engine.bundle import load_bundle


def _uri(tp: TrackingParams) -> str:
    """Make a relative ``sqlite:///`` URI absolute (the CLI and DVC may run from elsewhere)."""
    prefix = "sqlite:///"
    if tp.uri.startswith(prefix) and not tp.uri[len(prefix):].startswith("/"):
        db = Path(tp.uri[len(prefix):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(db)
    return tp.uri


def client(tp: TrackingParams):
    """An MLflow client on the configured store, with the experiment created (artifacts under ``artifact_root``)."""
    import mlflow

    uri = _uri(tp)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    c = mlflow.MlflowClient(uri, uri)
    if c.get_experiment_by_name(tp.experiment) is None:
        location = None
        if uri.startswith("sqlite:"):
            art = Path(tp.artifact_root).resolve()
            art.mkdir(parents=True, exist_ok=True)
            location = art.as_uri()
        c.create_experiment(tp.experiment, artifact_location=location)
    return c


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def log_enrollment(result: EnrollResult, params: Params, data_dir: str | Path) -> str:
    """Start a run with params, enrollment metrics, data lineage and the holdout histogram; return its id."""
    from flows.anomaly.export import git_commit

    tp = params.tracking
    c = client(tp)
    exp = c.get_experiment_by_name(tp.experiment)
    run = c.create_run(exp.experiment_id, tags={
        "mlflow.runName": f"enroll-{Path(data_dir).name}",
        "dataset_hash": result.dataset_hash,
        "dataset_dir": str(Path(data_dir).resolve()),
        "git_commit": git_commit() or "unknown",
        "stage": "enroll",
    })
    rid = run.info.run_id
    for k, v in _flatten(params.model_dump(mode="json")).items():
        c.log_param(rid, k, v[:500])
    c.log_param(rid, "image_count", result.n_enroll)
    c.log_param(rid, "holdout_count", result.n_holdout)
    metrics = {
        "bank_size": result.bank_size,
        "threshold_image": result.thresholds.image,
        "threshold_pixel": result.thresholds.pixel,
        "holdout_frr": result.thresholds.holdout_frr,
        "peak_rss_mb": result.peak_rss_mb,
        **result.timings,
    }
    for k, v in metrics.items():
        c.log_metric(rid, k, float(v))
    with tempfile.TemporaryDirectory() as tmp:
        hist = score_histogram({"held-out normal": result.holdout_scores}, result.thresholds.image,
                               Path(tmp) / "holdout_scores.png", "Held-out normal scores and the calibrated threshold")
        c.log_artifact(rid, str(hist), "plots")
        if result.holdout_crops is not None:
            from serving.engine.preprocess import heatmap_overlay

            top = np.argsort(-result.holdout_scores)[:4]
            grid = overlay_grid([heatmap_overlay(result.holdout_crops[i], result.holdout_maps[i], result.thresholds.pixel)
                                 for i in top], [f"held-out normal {result.holdout_scores[i]:.3g}" for i in top],
                                Path(tmp) / "holdout_overlays.png")
            c.log_artifact(rid, str(grid), "plots")
    return rid


def log_evaluation(run_id: str, report: dict, tp: TrackingParams) -> None:
    """Log evaluation metrics, the test-score histogram and a grid of heatmap overlays to ``run_id``."""
    c = client(tp)
    for k in ("image_auroc", "pixel_auroc", "frr", "escape_rate"):
        if report.get(k) is not None:
            c.log_metric(run_id, f"eval_{k}", float(report[k]))
    for k, v in report["latency_ms"].items():
        c.log_metric(run_id, f"serving_latency_{k}_ms", v)
    results = report.get("_results") or []
    if not results:
        return
    from serving.engine.preprocess import heatmap_overlay

    with tempfile.TemporaryDirectory() as tmp:
        good = [r.score for r in results if not r.label]
        bad = [r.score for r in results if r.label]
        hist = score_histogram({"test good": good, "test defect": bad}, report["threshold"], Path(tmp) / "test_scores.png",
                               "Test scores at the calibrated threshold")
        ranked = sorted(results, key=lambda r: -r.score)
        picks = [r for r in ranked if r.label][:6] + [r for r in ranked if not r.label][:2]
        grid = overlay_grid([heatmap_overlay(r.crop, r.anomaly_map, report["pixel_threshold"]) for r in picks],
                            [f"{r.defect_type}/{r.path.name} {r.score:.3g}" for r in picks], Path(tmp) / "overlays.png")
        c.log_artifact(run_id, str(hist), "plots")
        c.log_artifact(run_id, str(grid), "plots")


def register_bundle(bundle_dir: str | Path, run_id: str, tp: TrackingParams) -> str:
    """Log the verified bundle's files to the run and register them as a model version with ``tp.alias``."""
    bundle = load_bundle(bundle_dir)
    c = client(tp)
    with tempfile.TemporaryDirectory() as tmp:
        # Only the manifest's files travel: enrollment.pt is training-side state.
        stage = Path(tmp) / "bundle"
        for name in [*bundle.manifest.files, "manifest.json"]:
            dst = stage / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((bundle.root / name).read_bytes())
        c.log_artifacts(run_id, str(stage), "bundle")
    m = bundle.manifest
    c.log_metric(run_id, "onnx_parity_max_rel_diff", m.parity["onnx_max_rel_diff"])
    c.set_tag(run_id, "bundle_version", m.bundle_version)
    c.set_tag(run_id, "tensorrt", "built" if m.tensorrt.built else "not built")
    try:
        c.get_registered_model(tp.model_name)
    except Exception:  # noqa: BLE001 - mlflow raises a generic RestException for "not found"
        c.create_registered_model(tp.model_name, description="Lineguard engine bundles (ONNX + manifest)")
    source = f"{c.get_run(run_id).info.artifact_uri}/bundle"
    mv = c.create_model_version(tp.model_name, source, run_id=run_id,
                                tags={"bundle_version": m.bundle_version, "dataset_hash": m.provenance.dataset_hash},
                                description=f"{m.algorithm} on {m.backbone}, threshold {m.thresholds.image:.4g}")
    c.set_registered_model_alias(tp.model_name, tp.alias, mv.version)
    return str(mv.version)
