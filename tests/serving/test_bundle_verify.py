"""The station refuses a bundle whose schema, files or hashes do not match."""

import json

import pytest

from serving.engine.bundle import SCHEMA_VERSION, load_bundle
from serving.engine import AnomalyEngine
from serving.errors import BundleError


def test_real_bundle_verifies_and_lists_every_file(bundle_copy):
    b = load_bundle(bundle_copy)
    m = b.manifest
    assert m.schema_version == SCHEMA_VERSION and m.model_kind == "anomaly"
    assert "model.onnx" in m.files and "explain/bank_source.npy" in m.files
    assert m.thresholds.image > m.thresholds.normal_image_scores.p50
    assert m.provenance.image_count > 0 and m.provenance.dataset_hash
    assert m.input.mean == (0.5, 0.5, 0.5)
    assert m.outputs == ["score", "anomaly_map", "patch_match"]
    assert m.parity["onnx_max_rel_diff"] <= m.parity["rtol"]
    assert m.tensorrt.built or "trtexec" in m.tensorrt.reason


def test_tampered_file_is_refused(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 does not match"):
        AnomalyEngine.load(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "explain" / "bank_source.npy").unlink()
    with pytest.raises(BundleError, match="bank_source.npy: listed in the manifest but missing"):
        load_bundle(bundle_copy)


def test_other_schema_is_refused(bundle_copy):
    mpath = bundle_copy / "manifest.json"
    raw = json.loads(mpath.read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    mpath.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema_version 2, this station reads schema 1"):
        load_bundle(bundle_copy)


def test_invalid_field_and_garbage_manifest_name_the_problem(bundle_copy):
    mpath = bundle_copy / "manifest.json"
    raw = json.loads(mpath.read_text())
    raw["thresholds"]["image"] = "high"
    mpath.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="thresholds.image"):
        load_bundle(bundle_copy)
    mpath.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)
    mpath.unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(bundle_copy)
