"""The enrollment flow runs in Prefect (ephemeral mode) and ends registered in MLflow."""

import pytest

from helpers import fast_params
from flows.orchestration.pipeline import enroll_flow
from serving.engine.bundle import load_bundle

pytestmark = pytest.mark.slow


def test_enroll_flow_end_to_end(tmp_path, small_elpv):
    params = fast_params()
    tp = params.tracking.model_copy(update={"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                            "artifact_root": str(tmp_path / "artifacts")})
    params = params.model_copy(update={"tracking": tp})
    summary = enroll_flow(str(small_elpv), str(tmp_path / "bundle"), params)
    assert summary["model_version"] == "1"
    assert summary["metrics"]["n_defect"] == 10 and summary["metrics"]["image_auroc"] is not None
    assert load_bundle(tmp_path / "bundle").manifest.provenance.mlflow_run_id == summary["mlflow_run_id"]
