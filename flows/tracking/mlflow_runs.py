"""MLflow tracking and registry: a run per enrollment, a linked run per evaluation, a registered model per product.

Runs are named ``<product>-<algorithm>-<backbone>-<step>``, start when the step started and end
FINISHED with its duration. An evaluation is its own run, nested under the enrollment it evaluates.
Each bundle becomes a version of ``lineguard-<product>`` tagged with what it came from: dataset hash,
model file sha256, threshold configuration, parent version, git commit.

Embedded default: SQLite under ``mlflow/`` (relative to the project root) with artifacts beside it. At
scale, set ``tracking.uri`` to a tracking server (PostgreSQL + S3-compatible artifacts behind it).

>>> run_id = log_enrollment(result, params, "data/elpv")     # doctest: +SKIP
>>> version = register_bundle("models/elpv/bundle", run_id, params)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from flows.anomaly.enroll import EnrollResult
from flows.evaluation.plots import overlay_grid, score_histogram
from flows.params import Params, TrackingParams
from flows.settings import project_root
from serving.engine.bundle import load_bundle

EXPERIMENT_KIND = "custom_model_development"  # the MLflow UI then opens on runs, not on GenAI traces


def _uri(tp: TrackingParams) -> str:
    """A relative ``sqlite:///`` URI resolved against the project root (the CLI and DVC may run from elsewhere)."""
    prefix = "sqlite:///"
    if tp.uri.startswith(prefix) and not tp.uri[len(prefix):].startswith("/"):
        db = (project_root() / tp.uri[len(prefix):]).resolve()
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
    exp = c.get_experiment_by_name(tp.experiment)
    if exp is None:
        location = None
        if uri.startswith("sqlite:"):
            art = (project_root() / tp.artifact_root).resolve()
            art.mkdir(parents=True, exist_ok=True)
            location = art.as_uri()
        c.create_experiment(tp.experiment, artifact_location=location, tags={"mlflow.experimentKind": EXPERIMENT_KIND})
    elif exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
        c.set_experiment_tag(exp.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
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


def run_name(params: Params, step: str) -> str:
    """``<product>-<algorithm>-<backbone>-<step>``: what a run is, readable in the run list."""
    return f"{params.product}-{params.model.algorithm}-{params.model.backbone}-{step}"


def _start(c, params: Params, step: str, started_at: float, tags: dict) -> str:
    exp = c.get_experiment_by_name(params.tracking.experiment)
    run = c.create_run(exp.experiment_id, start_time=int(started_at * 1000), run_name=run_name(params, step),
                       tags={"stage": step, "product": params.product, **tags})
    return run.info.run_id


def log_enrollment(result: EnrollResult, params: Params, data_dir: str | Path, started_at: float | None = None) -> str:
    """A finished run with params, enrollment metrics, data lineage and the hold-out histogram; return its id."""
    from flows.anomaly.export import git_commit

    c = client(params.tracking)
    started_at = started_at or time.time() - result.timings.get("total_s", 0.0)
    rid = _start(c, params, "enroll", started_at, {"dataset_hash": result.dataset_hash,
                                                   "dataset_dir": str(Path(data_dir).resolve()),
                                                   "git_commit": git_commit() or "unknown"})
    for k, v in _flatten(params.model_dump(mode="json")).items():
        c.log_param(rid, k, v[:500])
    c.log_param(rid, "image_count", result.n_enroll)
    c.log_param(rid, "calibration_folds", result.thresholds.folds)
    metrics = {"bank_size": result.bank_size, "threshold_image": result.thresholds.image,
               "threshold_pixel": result.thresholds.pixel, "unseen_frr": result.thresholds.holdout_frr,
               "frr_expected": result.thresholds.frr_expected, "frr_interval_low": result.thresholds.frr_interval[0],
               "frr_interval_high": result.thresholds.frr_interval[1],
               "peak_rss_mb": result.peak_rss_mb, **result.timings}
    for k, v in metrics.items():
        c.log_metric(rid, k, float(v))
    with tempfile.TemporaryDirectory() as tmp:
        hist = score_histogram({"normal, scored unseen": result.unseen_scores}, result.thresholds.image,
                               Path(tmp) / "unseen_scores.png", "Normal scores (each unseen by its fold's bank) and the threshold")
        c.log_artifact(rid, str(hist), "plots")
        if result.top_crops is not None:
            from serving.engine.preprocess import heatmap_overlay

            top = np.sort(result.unseen_scores)[::-1][:4]
            grid = overlay_grid([heatmap_overlay(result.top_crops[i], result.top_maps[i], result.thresholds.pixel)
                                 for i in range(len(top))], [f"highest unseen normal {s:.3g}" for s in top],
                                Path(tmp) / "top_normal_overlays.png")
            c.log_artifact(rid, str(grid), "plots")
    c.set_terminated(rid, "FINISHED")
    return rid


def log_evaluation(enroll_run_id: str, report: dict, params: Params, report_dir: str | Path | None = None,
                   started_at: float | None = None) -> str:
    """A run of its own for one evaluation, nested under the enrollment run it evaluates; return its id."""
    c = client(params.tracking)
    rid = _start(c, params, "evaluate", started_at or time.time(), {
        "mlflow.parentRunId": enroll_run_id, "enroll_run_id": enroll_run_id,
        "bundle_version": report.get("bundle_version", ""), "data_dir": str(report.get("data_dir", ""))})
    for k in ("image_auroc", "pixel_auroc", "frr", "escape_rate", "threshold"):
        if report.get(k) is not None:
            c.log_metric(rid, k, float(report[k]))
    for k in ("image_auroc_interval", "escape_interval"):  # how sure: beside the figure, where runs are compared
        if report.get(k) is not None:
            c.log_metric(rid, f"{k}_low", float(report[k][0]))
            c.log_metric(rid, f"{k}_high", float(report[k][1]))
    for k, v in report["latency_ms"].items():
        c.log_metric(rid, f"serving_latency_{k}_ms", v)
    results = report.get("_results") or []
    with tempfile.TemporaryDirectory() as tmp:
        if results:
            from serving.engine.preprocess import heatmap_overlay

            good = [r.score for r in results if not r.label]
            bad = [r.score for r in results if r.label]
            hist = score_histogram({"test good": good, "test defect": bad}, report["threshold"],
                                   Path(tmp) / "test_scores.png", "Test scores at the calibrated threshold")
            ranked = sorted(results, key=lambda r: -r.score)
            picks = [r for r in ranked if r.label][:6] + [r for r in ranked if not r.label][:2]
            grid = overlay_grid([heatmap_overlay(r.crop, r.anomaly_map, report["pixel_threshold"]) for r in picks],
                                [f"{r.defect_type}/{r.path.name} {r.score:.3g}" for r in picks], Path(tmp) / "overlays.png")
            c.log_artifact(rid, str(hist), "plots")
            c.log_artifact(rid, str(grid), "plots")
        summary = {k: v for k, v in report.items() if not k.startswith("_") and k != "verdicts"}
        (Path(tmp) / "evaluation.json").write_text(json.dumps(summary, indent=1, default=str))
        c.log_artifact(rid, str(Path(tmp) / "evaluation.json"))
    if report_dir is not None:
        c.log_artifacts(rid, str(report_dir), "report")
    c.set_terminated(rid, "FINISHED")
    return rid


def register_bundle(bundle_dir: str | Path, run_id: str, params: Params) -> str:
    """Log the verified bundle's files to the run and register them as a version of ``lineguard-<product>``
    (a detector bundle: ``lineguard-<product>-detector``)."""
    bundle = load_bundle(bundle_dir)
    kind = bundle.manifest.model_kind
    tp, name = params.tracking, params.model_name + ("-detector" if kind == "detector" else "")
    c = client(tp)
    with tempfile.TemporaryDirectory() as tmp:
        # only the manifest's files travel: enrollment.pt is training-side state
        stage = Path(tmp) / "bundle"
        for f in [*bundle.manifest.files, "manifest.json", *(["manifest.sig"] if (bundle.root / "manifest.sig").is_file()
                                                                  else [])]:
            dst = stage / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((bundle.root / f).read_bytes())
        c.log_artifacts(run_id, str(stage), "bundle")
    m = bundle.manifest
    for k, v in m.parity.items():  # anomaly: relative score/map differences; detector: box px and score
        c.log_metric(run_id, "onnx_parity_max_rel_diff" if k == "onnx_max_rel_diff" else f"parity_{k}", v)
    c.set_tag(run_id, "bundle_version", m.bundle_version)
    c.set_tag(run_id, "tensorrt", "built" if m.tensorrt.built else "not built")
    try:
        c.get_registered_model(name)
    except Exception:  # noqa: BLE001 - mlflow raises a generic RestException for "not found"
        c.create_registered_model(name, description=f"Lineguard engine bundles for {params.product} (ONNX + manifest)")
    t = m.thresholds
    config = ({"image": t.image, "pixel": t.pixel, "target_frr": t.target_frr, "method": t.method} if t else
              {"confidence": m.detector.confidence, "iou": m.detector.iou})
    tags = {"bundle_version": m.bundle_version, "dataset_hash": m.provenance.dataset_hash,
            "model_sha256": m.files[m.model_file].sha256, "model_kind": m.model_kind,
            "threshold_config": json.dumps(config),
            "parent_version": m.provenance.parent_version or "", "git_commit": m.provenance.git_commit or "unknown"}
    what = f"threshold {t.image:.4g}" if t else f"classes {', '.join(m.class_names)}"
    mv = c.create_model_version(name, f"{c.get_run(run_id).info.artifact_uri}/bundle", run_id=run_id, tags=tags,
                                description=f"{m.algorithm} on {m.backbone}, {what}")
    c.set_registered_model_alias(name, tp.alias, mv.version)
    return str(mv.version)


def log_recalibration(result, params: Params, parent) -> tuple[str, str]:
    """A run for one recalibration (figures, who/when/how much), linked to the parent bundle's run; registers the
    new bundle as the next version of the product's model. Returns (run id, model version)."""
    c = client(params.tracking)
    parent_run = parent.provenance.mlflow_run_id
    tags = {"parent_version": result.parent_version, "mode": result.mode, "bundle_version": result.bundle_version}
    if parent_run:
        tags |= {"mlflow.parentRunId": parent_run, "parent_run_id": parent_run}
    rid = _start(c, params, "recalibrate", time.time() - result.seconds, tags)
    for k in ("mode", "n_new_normals"):
        c.log_param(rid, k, getattr(result, k))
    c.log_param(rid, "flagged_left_out", len(result.flagged))
    for k in ("seconds", "bank_before", "bank_after", "threshold_before", "threshold_after", "frr_new_before",
              "frr_new_after", "frr_expected", "far_spreads"):
        c.log_metric(rid, k, float(getattr(result, k)))
    report = Path(result.out) / "report"
    c.log_artifacts(rid, str(report), "report")
    c.set_terminated(rid, "FINISHED")
    from flows.anomaly.enroll import set_run_id
    from flows.fleet.keys import signer
    from serving.engine.bundle import write_manifest

    set_run_id(result.out, rid)
    m = load_bundle(result.out).manifest
    write_manifest(Path(result.out), m.model_copy(update={"provenance": m.provenance.model_copy(
        update={"mlflow_run_id": rid})}), sign=signer(params.export.signing_key))
    return rid, register_bundle(result.out, rid, params)


def dvc_hash(data: str | Path) -> str | None:
    """The md5 DVC recorded for ``data`` when a stage of the project's ``dvc.lock`` writes it, else None."""
    import yaml

    lock = project_root() / "dvc.lock"
    if not lock.is_file():
        return None
    target = Path(data).resolve()
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for o in stage.get("outs", []):
            if (project_root() / o["path"]).resolve() == target:
                return o.get("md5")
    return None


def log_detector(result, params: Params, data: Path) -> tuple[str, str]:
    """A run for one detector training (mAP, per-class AP/P/R, the dataset's hashes, the confusion matrix),
    and the bundle registered as the next version of ``lineguard-<product>-detector``."""
    c = client(params.tracking)
    rid = _start(c, params, "detector-train", time.time() - result.seconds,
                 {"dataset_sha256": result.dataset_sha256, "dataset_dvc_md5": dvc_hash(data) or "not DVC-tracked",
                  "dataset_dir": str(data), "bundle_version": result.bundle_version})
    for k, v in _flatten(params.detector.model_dump(mode="json")).items():
        c.log_param(rid, f"detector.{k}", v)
    for k in ("n_train", "n_val", "n_synthetic"):
        c.log_param(rid, k, getattr(result, k))
    c.log_metric(rid, "map50", result.map50)
    for cls in result.per_class:
        c.log_metric(rid, f"ap50_{cls}", result.per_class[cls])
        c.log_metric(rid, f"precision_{cls}", result.precision.get(cls, 0.0))
        c.log_metric(rid, f"recall_{cls}", result.recall.get(cls, 0.0))
    c.log_metric(rid, "seconds", result.seconds)
    c.log_artifacts(rid, str(Path(result.out) / "report"), "report")
    c.set_terminated(rid, "FINISHED")
    return rid, register_bundle(result.out, rid, params)
