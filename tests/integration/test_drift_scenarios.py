"""Drift on real images, replayed through the station's own inspection and stability monitor.

Enrolled on 100 ELPV mono cells at the default settings; the streams (``flows.drift.scenarios``) are
held-out good cells with realistic jitter, then a changeover to poly cells, a lighting drop, a camera
knock or a defocus. Then a guided recalibration from 100 captured new normals.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main as lineguard
from flows.drift.scenarios import SHIFTS, elpv_split, jitter, scenario, stream, write_stream
from flows.evaluation.metrics import auroc
from helpers import ROOT
from serving.drift.stability import StabilityConfig
from serving.engine.anomaly import AnomalyEngine
from serving.images import read_image
from serving.station.stability_check import check_stability
from services import mlflow_server

pytestmark = pytest.mark.slow
CHANGE_AT = 100  # parts before the drift begins
REPORT = ROOT / ".lineguard" / "reports" / "drift_scenarios.json"


def _report(key: str, value) -> None:
    """Keep what each scenario measured (the drift benchmark prints the same figures)."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[key] = value
    REPORT.write_text(json.dumps(data, indent=1))


@pytest.fixture(scope="module")
def split():
    return elpv_split(n_enroll=100, seed=0)


@pytest.fixture(scope="module")
def mono_bundle(split, tmp_path_factory):
    """Enrolled at the project's default parameters, as `lineguard enroll` would."""
    from flows.anomaly.enroll import enroll
    from flows.anomaly.export import export_bundle
    from flows.params import load_params

    root = tmp_path_factory.mktemp("drift")
    good = root / "data" / "train" / "good"
    good.mkdir(parents=True)
    for p in split.enroll:
        os.symlink(p, good / p.name)
    params = load_params(ROOT / "params.yaml", {"tracking.enabled": False})
    enroll(root / "data", params, root / "bundle", progress=False)
    export_bundle(root / "bundle", params.export)
    return root / "bundle"


def test_a_long_steady_stream_raises_no_alert(mono_bundle, split):
    run = check_stability(AnomalyEngine.load(mono_bundle), scenario("stable", split, n_stable=2000))
    s = run.summary()
    _report("stable", {"parts": s["n"], "false_alerts": run.alerts, "min_index": s["min_index"]})
    assert s["n"] == 2000 and not run.unreadable
    assert run.alerts == 0 and not s["alert"], f"false alert at part {s['first_alert_at']} ({s['alert_component']})"
    assert s["min_index"] > StabilityConfig().alert_below


@pytest.mark.parametrize("name, moved_by", [("changeover", {"feature"}), ("lighting", {"lighting", "feature"}),
                                            ("knock", {"feature", "score"}), ("defocus", {"focus"})])
def test_a_drift_alerts_within_50_parts_and_names_what_moved(mono_bundle, split, name, moved_by):
    run = check_stability(AnomalyEngine.load(mono_bundle), scenario(name, split, n_before=CHANGE_AT, n_after=100))
    s = run.summary()
    parts = None if s["first_alert_at"] is None else s["first_alert_at"] - CHANGE_AT + 1
    _report(name, {"parts_until_alert": parts, "component": s["alert_component"], "min_index": s["min_index"]})
    assert s["alert"] and s["first_alert_at"] >= CHANGE_AT, "no alert, or one before the change"
    assert parts <= 50
    assert s["alert_component"] in moved_by
    assert min(run.index[:CHANGE_AT]) > StabilityConfig().alert_below  # steady until the change


def _scores(engine, paths, transform, seed):
    rng = np.random.default_rng(seed)
    return np.array([engine.infer(transform(read_image(p), rng)).score for p in paths])


@pytest.mark.services
def test_guided_recalibration_after_a_lighting_drop(mono_bundle, split, tmp_path, capsys):
    """Capture 100 darker good parts, recalibrate (CLI, MLflow on), and the station is steady again."""
    capture = write_stream(stream(split.held_out[:100], 100, SHIFTS["lighting"], seed=5), tmp_path / "capture" / "good")
    new = tmp_path / "bundle-v2"
    with mlflow_server(tmp_path / "mlflow") as uri:
        assert lineguard(["recalibrate", "--bundle", str(mono_bundle), "--normals", str(capture.parent), "--out",
                          str(new), "--json", f"tracking.uri={uri}"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        from flows.tracking.mlflow_runs import client
        from flows.params import TrackingParams

        c = client(TrackingParams(uri=uri))
        mv = c.get_model_version("lineguard-elpv-mono", out["model_version"])  # the bundle's product
        run = c.get_run(out["mlflow_run_id"])
        arts = {a.path for a in c.list_artifacts(run.info.run_id, "report")}
    for key in ("seconds", "mode", "n_new_normals", "bank_before", "bank_after", "threshold_before", "threshold_after",
                "frr_new_before", "frr_new_after"):
        assert key in out
    assert out["mode"] == "incremental" and out["n_new_normals"] == 100 and out["bank_after"] >= out["bank_before"]
    assert out["seconds"] < 120
    old_m, new_m = AnomalyEngine.load(mono_bundle).bundle.manifest, AnomalyEngine.load(new).bundle.manifest
    assert new_m.provenance.parent_version == old_m.bundle_version and "@" in new_m.provenance.created_by
    assert "report/scores_before_after.png" in new_m.files and "report/recalibration.json" in new_m.files
    rec = json.loads((new / "report" / "recalibration.json").read_text())
    assert rec["n_new_normals"] == 100 and rec["user"] and rec["time"] > 0  # who, when, how much
    assert mv.tags["parent_version"] == old_m.bundle_version and run.info.status == "FINISHED"
    assert arts >= {"report/scores_before_after.png", "report/recalibration.json"}

    # held-out new normals (not the captured ones): false rejects back within the calibrated promise
    engine = AnomalyEngine.load(new)
    held = _scores(engine, split.held_out[100:250], SHIFTS["lighting"], seed=9)
    frr = float(np.mean(held > new_m.thresholds.image))
    lo, hi = new_m.thresholds.frr_interval
    defects_dark = _scores(engine, split.defects[:100], SHIFTS["lighting"], seed=3)
    old = AnomalyEngine.load(mono_bundle)
    base_auroc = auroc(np.r_[np.zeros(150), np.ones(100)],
                       np.r_[_scores(old, split.held_out[100:250], jitter, 1), _scores(old, split.defects[:100], jitter, 2)])
    new_auroc = auroc(np.r_[np.zeros(150), np.ones(100)], np.r_[held, defects_dark])
    _report("recalibration_lighting", {"frr_held_out_new": frr, "frr_interval": [lo, hi], "auroc_unshifted_old": base_auroc,
                                       "auroc_shifted_new": new_auroc, **{k: out[k] for k in ("seconds", "bank_before",
                                                                                             "bank_after")}})
    assert frr <= hi
    assert new_auroc >= base_auroc - 0.01

    # deployed, the stability baseline is the new bundle's: the darker line is steady again
    after = check_stability(engine, stream(split.held_out[250:], 150, SHIFTS["lighting"], seed=11))
    assert not after.summary()["alert"], after.summary()


def test_stability_command_prints_the_figures_an_engineer_asks_for(mono_bundle, split, tmp_path, capsys):
    folder = write_stream(scenario("defocus", split, n_before=40, n_after=60), tmp_path / "stream")
    assert lineguard(["stability", "--bundle", str(mono_bundle), "--images", str(folder), "--json",
                      "--plot", str(tmp_path / "trend.png")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 100 and out["alert"] is True and out["first_alert_at"] >= 40
    assert {"stability_index", "min_index", "components"} <= set(out) and "focus" in out["components"]
    assert (tmp_path / "trend.png").stat().st_size > 5000
    shutil.rmtree(folder)
