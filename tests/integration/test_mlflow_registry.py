"""Enrollment logged to a real MLflow server on 127.0.0.1; the bundle registered with an alias."""

import pytest

from helpers import fast_params
from flows.anomaly.enroll import enroll, set_run_id
from flows.anomaly.export import export_bundle
from flows.tracking.mlflow_runs import client, log_enrollment, register_bundle
from serving.engine.bundle import load_bundle
from services import mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_enrollment_run_and_registered_bundle(tmp_path, small_elpv):
    with mlflow_server(tmp_path / "mlflow") as uri:
        params = fast_params()
        tp = params.tracking.model_copy(update={"enabled": True, "uri": uri, "model_name": "station-7", "alias": "candidate"})
        params = params.model_copy(update={"tracking": tp})
        out = tmp_path / "bundle"
        result = enroll(small_elpv, params, out, progress=False)
        run_id = log_enrollment(result, params, small_elpv)
        set_run_id(out, run_id)
        export_bundle(out, params.export)
        assert load_bundle(out).manifest.provenance.mlflow_run_id == run_id
        version = register_bundle(out, run_id, tp)

        c = client(tp)
        run = c.get_run(run_id)
        assert run.data.params["model.backbone"] == "tf_efficientnet_lite0"
        assert run.data.params["image_count"] == str(result.n_enroll)
        assert run.data.metrics["bank_size"] == result.bank_size
        assert run.data.tags["dataset_hash"] == result.dataset_hash
        assert "git_commit" in run.data.tags
        arts = {a.path for a in c.list_artifacts(run_id, "plots")} | {a.path for a in c.list_artifacts(run_id, "bundle")}
        assert {"plots/holdout_scores.png", "plots/holdout_overlays.png", "bundle/manifest.json", "bundle/model.onnx"} <= arts
        mv = c.get_model_version_by_alias("station-7", "candidate")
        assert mv.version == version and mv.run_id == run_id
