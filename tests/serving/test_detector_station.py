"""A detector bundle beside the anomaly bundle on the lean station: verified, run by ONNX Runtime, weighed by the gate
per class, shown with its boxes, counted per class, recorded in evidence, refused when its classes do not fit."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import resign
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.engine.detector import DetectorEngine, letterbox
from serving.errors import BundleError
from serving.images import list_images, read_image
from serving.station.runtime import Station


def test_detector_bundle_verifies_and_maps_boxes_back_to_source_pixels(detector_dir, test_images):
    det = DetectorEngine.load(detector_dir)
    m = det.bundle.manifest
    assert m.model_kind == "detector" and m.class_names == ["broken_large", "broken_small", "contamination"]
    assert m.parity["onnx_box_max_abs_px"] < 0.05 and "map50" in m.detector.metrics
    img = read_image(list_images(test_images / "defect")[0])
    dets = det.infer(img)
    assert dets and all(d.class_name in m.class_names and d.confidence >= 0.001 for d in dets)
    for d in dets:
        x, y, w, h = d.box
        assert -1 <= x and x + w <= img.shape[1] + 1 and -1 <= y and y + h <= img.shape[0] + 1
    boxed, scale, (px, py) = letterbox(np.zeros((100, 200, 3), np.uint8), 160, 160)
    assert boxed.shape == (160, 160, 3) and scale == 0.8 and (px, py) == (0, 40)


def test_station_runs_both_models_and_names_rule_and_class(make_config, detector_dir):
    st = Station(make_config(detector_bundle=str(detector_dir), source={"rate_hz": 4}))
    st.start()
    assert st.wait(60)
    try:
        recs = st.evidence.query(limit=100, order="id")
        assert len(recs) == 12
        det_fails = [r for r in recs if r.rule.startswith("detector.")]
        assert det_fails, "a detector reporting from 0.001 fails parts by class"
        for r in det_fails:
            assert r.verdict == "FAIL" and r.class_name == r.rule.split(".", 1)[1] and r.detections
        assert all(r.class_name for r in recs if r.detections)
        assert all("detector" in r.latency_ms for r in recs if not r.rule.startswith("fail_safe"))
        client = TestClient(create_app(st))
        metrics = client.get("/metrics").text
        assert 'lineguard_class_verdicts_total{class="' in metrics
        h = {"Authorization": "Bearer " + client.post("/api/login", json={"username": "olga", "password": "op-pass"}).json()["token"]}
        assert {"broken_large", "contamination"} <= set(client.get("/api/review", headers=h).json()["classes"])
        last = client.get("/api/state", headers=h).json()["last"]
        assert last["class_name"] or not last["detections"]
        png = client.get("/api/live/overlay.png", headers=h)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    finally:
        st.stop()


def test_a_detector_whose_classes_do_not_fit_the_station_is_refused(make_config, detector_dir):
    with pytest.raises(BundleError, match=r"detector classes .* are not in this station's classes \['crack'\]"):
        Station(make_config(detector_bundle=str(detector_dir), classes=["crack"]))
    with pytest.raises(BundleError, match=r"gate.class_confidence names \['scratch'\]"):
        Station(make_config(detector_bundle=str(detector_dir), gate={"class_confidence": {"scratch": 0.5}}))


def test_a_detector_that_fails_on_the_last_part_is_refused_and_the_old_models_keep_running(make_config, detector_dir,
                                                                                            tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(detector_dir, broken)
    m = json.loads((broken / "manifest.json").read_text())
    keep = m["class_names"][:1]  # the graph still scores 3 classes: decoding them must fail, not pass
    m["class_names"], m["detector"]["confidence"] = keep, {k: v for k, v in m["detector"]["confidence"].items()
                                                           if k in keep}
    m["bundle_version"] += "-broken"  # a new, later version, signed: only the last-part check can refuse it
    m["provenance"]["created_at"] = "2099-01-01T00:00:00+00:00"
    (broken / "manifest.json").write_text(json.dumps(m))
    resign(broken)
    st = Station(make_config(detector_bundle=str(detector_dir), source={"rate_hz": 20}))
    st.start()
    assert st.wait(60)
    try:
        before = st.detector.bundle.manifest.bundle_version
        with pytest.raises(BundleError, match="fails on the last part"):
            st.reload_bundle(str(broken), "eddie")
        assert st.detector.bundle.manifest.bundle_version == before and st.detector.classes != keep
        assert any(e["action"] == "bundle_refused" for e in st.audit.entries())
    finally:
        st.stop()


def test_the_detector_loads_no_training_module(detector_dir, test_images):
    code = f"""
import json, sys
from serving.engine.detector import DetectorEngine
from serving.images import read_image, list_images
d = DetectorEngine.load({str(detector_dir)!r})
d.infer(read_image(list_images({str(test_images / 'good')!r})[0]))
print(json.dumps(sorted(m for m in ("torch", "ultralytics", "anomalib", "timm", "mlflow") if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_detector_train_json_names_what_an_engineer_needs(detector_dir):
    """`lineguard detector train --json` (run by the fixture on MVTec AD bottle): the documented keys."""
    summary = detector_dir.with_name(detector_dir.name + ".train.json")
    if not summary.is_file():
        pytest.skip("the detector was built before its --json summary was kept; delete it to rebuild")
    r = json.loads(summary.read_text())
    assert {"map50", "per_class", "seconds", "n_train", "n_val"} <= set(r)
    assert set(r["per_class"]) == {"broken_large", "broken_small", "contamination"} and r["n_val"] > 0


def test_a_lower_gate_confidence_lowers_what_the_detector_reports(detector_dir):
    from serving.engine.detector import DetectorEngine as Det

    d = Det.load(detector_dir)
    own = dict(d.det.confidence)
    d.report_from({c: v / 2 for c, v in own.items()})  # the station's gate asks for less than the bundle
    assert d.report == {c: v / 2 for c, v in own.items()} and d.min_conf == min(own.values()) / 2
    d.report_from({c: 0.99 for c in own})  # asks for more: the gate decides, the engine still reports from its own
    assert d.report == own
