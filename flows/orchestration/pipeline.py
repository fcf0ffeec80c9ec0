"""The enrollment flow in Prefect: prepare -> enroll+calibrate -> export -> evaluate -> register.

Each task wraps the same plain function the CLI and the DVC stages call.
With no ``PREFECT_API_URL`` it runs in Prefect's ephemeral mode (the demo);
pointed at a Prefect server, the same flow is schedulable as a deployment.

>>> summary = enroll_flow("data/elpv", "models/elpv/bundle")   # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task

from flows.anomaly import enroll as enroll_step
from flows.evaluation import evaluate as evaluate_step
from flows.anomaly import export as export_step
from flows.data import prepare as prepare_step
from flows.tracking import mlflow_runs as tracking
from flows.params import Params


@task(name="prepare-elpv")
def prepare_task(out_dir: str, params: Params) -> str:
    """Write the embedded ELPV demo set in MVTec layout."""
    e = params.data.elpv
    return str(prepare_step.prepare_elpv(out_dir, e.n_train, e.n_test_good, e.n_test_defect, e.cell_type, e.seed))


@task(name="enroll-and-calibrate")
def enroll_task(data_dir: str, params: Params, bundle_dir: str) -> enroll_step.EnrollResult:
    """Build the memory bank / Gaussian and calibrate thresholds from held-out normals."""
    return enroll_step.enroll(data_dir, params, bundle_dir)


@task(name="track-enrollment")
def track_task(result: enroll_step.EnrollResult, params: Params, data_dir: str, started_at: float) -> str:
    """Log the enrollment as an MLflow run and record the run in the checkpoint."""
    run_id = tracking.log_enrollment(result, params, data_dir, started_at)
    enroll_step.set_run_id(result.path, run_id)
    return run_id


@task(name="export-bundle")
def export_task(bundle_dir: str, params: Params):
    """ONNX (+TensorRT) export with parity checks; writes the manifest."""
    return export_step.export_bundle(bundle_dir, params.export)


@task(name="evaluate")
def evaluate_task(bundle_dir: str, data_dir: str) -> dict:
    """Score the test split through the serving engine."""
    return evaluate_step.evaluate(bundle_dir, data_dir, keep=True)


@task(name="register-bundle")
def register_task(bundle_dir: str, run_id: str, report: dict, params: Params) -> str:
    """Log the evaluation as its own run; register the bundle as a version of lineguard-<product>."""
    tracking.log_evaluation(run_id, report, params)
    return tracking.register_bundle(bundle_dir, run_id, params)


@flow(name="lineguard-enroll", log_prints=True)
def enroll_flow(data_dir: str, bundle_dir: str, params: Params | None = None, prepare: bool = False) -> dict:
    """Enroll a station end to end and return a summary (metrics, MLflow run and model version)."""
    params = params or Params()
    started = time.time()
    if prepare:
        data_dir = prepare_task(data_dir, params)
    result = enroll_task(data_dir, params, bundle_dir)
    run_id = track_task(result, params, data_dir, started) if params.tracking.enabled else None
    manifest = export_task(bundle_dir, params)
    report = evaluate_task(bundle_dir, data_dir)
    version = register_task(bundle_dir, run_id, report, params) if run_id else None
    report.pop("_results", None)
    return {
        "bundle": str(Path(bundle_dir).resolve()),
        "bundle_version": manifest.bundle_version,
        "bank_size": result.bank_size,
        "enroll_timings": result.timings,
        "peak_rss_mb": result.peak_rss_mb,
        "thresholds": {"image": manifest.thresholds.image, "pixel": manifest.thresholds.pixel},
        "onnx_parity": manifest.parity["onnx_max_rel_diff"],
        "tensorrt": manifest.tensorrt.reason or "built",
        "search": manifest.search_summary,
        "metrics": report,
        "mlflow_run_id": run_id,
        "model_version": version,
    }
