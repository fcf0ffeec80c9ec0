"""The CLI end to end on small real subsets: enroll -> export -> evaluate (JSON contract)."""

import json

import pytest

from helpers import fast_params
from flows.cli import main as lineguard
from flows.evaluation.evaluate import REQUIRED_KEYS
from serving.engine.bundle import load_bundle

pytestmark = pytest.mark.slow


@pytest.fixture()
def params_file(tmp_path):
    from test_bad_input import params_yaml

    p = tmp_path / "params.yaml"
    p.write_text(params_yaml(min_good=20))
    return p


def run_json(capsys, *argv):
    capsys.readouterr()
    assert lineguard(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.shared_data
@pytest.mark.parametrize("model", ["patchcore", "padim"])
def test_bottle_enroll_evaluate_with_masks(tmp_path, small_bottle, params_file, capsys, model):
    out = tmp_path / "bundle"
    assert lineguard(["--params", str(params_file), "enroll", "--data", str(small_bottle), "--out", str(out),
                      "--model", model, "--no-track"]) == 0
    printed = capsys.readouterr().out
    assert "bank size" in printed and "ONNX parity" in printed
    m = load_bundle(out).manifest
    assert m.algorithm == model and m.parity["onnx_max_rel_diff"] < 1e-3
    report = run_json(capsys, "evaluate", "--bundle", str(out), "--data", str(small_bottle), "--json")
    assert set(REQUIRED_KEYS) <= set(report)
    assert report["n_good"] == 6 and report["n_defect"] == 6
    assert report["image_auroc"] >= 0.9
    assert report["pixel_auroc"] is not None and report["pixel_auroc"] > 0.9
    # 22 images at 128 px is a crude model; the point is that a threshold calibrated without any
    # defect does not fail every good part (full-size figures are in benchmarks/README.md)
    assert report["frr"] < 0.5
    assert set(report["per_type"]) == {"good", "broken_large"}


def test_elpv_enroll_evaluate_without_masks(tmp_path, small_elpv, params_file, capsys):
    out = tmp_path / "bundle"
    assert lineguard(["--params", str(params_file), "enroll", "--data", str(small_elpv), "--out", str(out), "--no-track"]) == 0
    report = run_json(capsys, "evaluate", "--bundle", str(out), "--data", str(small_elpv), "--json")
    assert report["pixel_auroc"] is None
    assert report["image_auroc"] > 0.7
    assert report["threshold"] == load_bundle(out).manifest.thresholds.image
    assert [row["target_frr"] for row in report["threshold_sweep"]][:3] == [0.001, 0.005, 0.01]


def test_roi_crop_is_recorded_and_applied(tmp_path, small_elpv):
    from flows.anomaly.enroll import enroll
    from flows.anomaly.export import export_bundle

    params = fast_params(roi="20,20,260,260")
    enroll(small_elpv, params, tmp_path / "b", progress=False)
    m = export_bundle(tmp_path / "b", params.export)
    assert (m.roi.x, m.roi.y, m.roi.w, m.roi.h) == (20, 20, 260, 260)
