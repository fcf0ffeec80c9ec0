"""Runs and registry on a real MLflow server on 127.0.0.1: named runs that end with their duration, an evaluation
run linked to its enrollment, one registered model per product with lineage tags on every version."""

import json

import pytest

from helpers import fast_params
from flows.anomaly.enroll import enroll, set_run_id
from flows.anomaly.export import export_bundle
from flows.evaluation.evaluate import evaluate
from flows.tracking.mlflow_runs import EXPERIMENT_KIND, client, log_enrollment, log_evaluation, register_bundle
from serving.engine.bundle import load_bundle
from services import mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_enrollment_and_evaluation_runs_and_the_registered_bundle(tmp_path, small_elpv):
    with mlflow_server(tmp_path / "mlflow") as uri:
        params = fast_params()
        tp = params.tracking.model_copy(update={"enabled": True, "uri": uri, "alias": "candidate"})
        params = params.model_copy(update={"tracking": tp, "product": "solar-cell"})
        out = tmp_path / "bundle"
        result = enroll(small_elpv, params, out, progress=False)
        run_id = log_enrollment(result, params, small_elpv)
        set_run_id(out, run_id)
        export_bundle(out, params.export)
        assert load_bundle(out).manifest.provenance.mlflow_run_id == run_id
        version = register_bundle(out, run_id, params)
        eval_id = log_evaluation(run_id, evaluate(out, small_elpv, progress=False, keep=True), params)

        c = client(tp)
        assert c.get_experiment_by_name(tp.experiment).tags["mlflow.experimentKind"] == EXPERIMENT_KIND
        run = c.get_run(run_id)
        assert run.info.run_name == "solar-cell-patchcore-tf_efficientnet_lite0-enroll"
        assert run.info.status == "FINISHED" and run.info.end_time > run.info.start_time  # with its duration
        assert run.data.params["model.backbone"] == "tf_efficientnet_lite0"
        assert run.data.params["image_count"] == str(result.n_enroll)
        assert run.data.metrics["bank_size"] == result.bank_size
        assert run.data.tags["dataset_hash"] == result.dataset_hash and "git_commit" in run.data.tags
        arts = {a.path for a in c.list_artifacts(run_id, "plots")} | {a.path for a in c.list_artifacts(run_id, "bundle")}
        assert {"plots/unseen_scores.png", "plots/top_normal_overlays.png", "bundle/manifest.json", "bundle/model.onnx"} <= arts

        ev = c.get_run(eval_id)  # the evaluation is a run of its own, nested under the enrollment
        assert ev.info.run_name.endswith("-evaluate") and ev.info.status == "FINISHED"
        assert ev.data.tags["mlflow.parentRunId"] == run_id and "image_auroc" in ev.data.metrics
        got = ev.data.metrics
        assert got["image_auroc_interval_low"] <= got["image_auroc"] <= got["image_auroc_interval_high"]
        assert got["escape_interval_low"] <= got["escape_rate"] <= got["escape_interval_high"]
        assert "image_auroc" not in run.data.metrics

        mv = c.get_model_version_by_alias("lineguard-solar-cell", "candidate")  # one model per product
        m = load_bundle(out).manifest
        assert mv.version == version and mv.run_id == run_id
        assert mv.tags["dataset_hash"] == m.provenance.dataset_hash
        assert mv.tags["model_sha256"] == m.files[m.model_file].sha256
        assert json.loads(mv.tags["threshold_config"])["image"] == pytest.approx(m.thresholds.image)
        assert "parent_version" in mv.tags and mv.tags["git_commit"]


def test_a_trained_detector_is_logged_and_registered_under_its_own_model(tmp_path, detector_dir):
    """What `lineguard detector train` does with tracking on (the default): a run with mAP and per-class figures,
    and the bundle as a version of lineguard-<product>-detector with its lineage tags."""
    from dataclasses import fields
    from pathlib import Path

    from flows.detector.train import DetectorResult
    from flows.params import load_params
    from flows.tracking.mlflow_runs import log_detector
    from helpers import ROOT

    summary = json.loads(detector_dir.with_name(detector_dir.name + ".train.json").read_text())
    result = DetectorResult(**{f.name: summary[f.name] for f in fields(DetectorResult) if f.name in summary})
    result.out = Path(detector_dir)
    with mlflow_server(tmp_path / "mlflow") as uri:
        params = load_params(ROOT / "params.yaml", {"tracking.uri": uri, "tracking.enabled": True},
                             ROOT / "products" / "bottle.yaml")
        run_id, version = log_detector(result, params, detector_dir)
        c = client(params.tracking)
        run = c.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["map50"] == pytest.approx(result.map50)
        assert {f"ap50_{k}" for k in result.per_class} <= set(run.data.metrics)
        assert any(k.startswith("parity_") for k in run.data.metrics)
        mv = c.get_model_version(f"{params.model_name}-detector", version)
        m = load_bundle(detector_dir).manifest
        assert mv.tags["model_kind"] == "detector" and mv.tags["model_sha256"] == m.files[m.model_file].sha256
        assert json.loads(mv.tags["threshold_config"])["confidence"] == m.detector.confidence
