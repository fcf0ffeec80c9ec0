"""The station refuses a bundle whose schema, files or hashes do not match."""

import json
import re

import numpy as np

import pytest

from serving.engine.bundle import load_bundle, sha256_file, sha256_files
from serving.engine.manifest import SCHEMA_VERSION
from serving.engine import AnomalyEngine
from serving.errors import BundleError
from helpers import schema1_bundle


def test_real_bundle_verifies_and_lists_every_file(bundle_copy):
    b = load_bundle(bundle_copy)
    m = b.manifest
    assert m.schema_version == SCHEMA_VERSION and m.model_kind == "anomaly"
    assert "model.onnx" in m.files and "explain/bank_source.npy" in m.files
    assert m.thresholds.image > m.thresholds.normal_image_scores.p50
    assert m.provenance.image_count > 0 and m.provenance.dataset_hash
    assert m.input.mean == (0.5, 0.5, 0.5)
    assert m.outputs == ["score", "anomaly_map", "patch_match", "embedding"]
    assert m.has_fingerprint and "explain/fingerprints.npy" in m.files
    b0 = m.baseline
    assert b0.score.p95 > 0 and b0.embedding_spread > 0 and len(b0.embedding_centroid) == b0.embedding_dims
    assert b0.luminance.std > 0 and b0.sharpness.p50 > 0
    t = m.thresholds
    assert t.n_normals == m.provenance.image_count and t.folds >= 2 and t.method.startswith("conformal")
    assert t.frr_interval[0] <= t.frr_expected <= t.frr_interval[1]
    assert m.parity["onnx_max_rel_diff"] <= m.parity["rtol"]
    assert m.tensorrt.built or "trtexec" in m.tensorrt.reason


def test_tampered_file_is_refused(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 does not match"):
        AnomalyEngine.load(bundle_copy)


def test_with_several_files_tampered_the_first_listed_is_named_whatever_thread_hashed_it(bundle_copy):
    """The files hash on two threads, largest first; the error must not depend on which finished first."""
    listed = list(load_bundle(bundle_copy).manifest.files)
    small, large = listed[0], max(listed, key=lambda n: (bundle_copy / n).stat().st_size)
    assert small != large
    for name in (small, large):
        with open(bundle_copy / name, "ab") as fh:
            fh.write(b"\0")
    for _ in range(5):
        with pytest.raises(BundleError, match=re.escape(small) + ": sha256 does not match"):
            load_bundle(bundle_copy)


def test_hashing_on_threads_gives_each_file_its_own_digest_and_raises_a_read_error(tmp_path):
    paths = []
    for i, size in enumerate((10, 3_000_000, 0, 70_000)):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(np.random.default_rng(i).bytes(size))
    assert sha256_files(paths, [p.stat().st_size for p in paths]) == [sha256_file(p) for p in paths]
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError, match="not a regular file"):
        sha256_files([*paths, tmp_path / "dir"], [1, 2, 3, 4, 5])


def test_an_error_on_the_helper_thread_is_raised_not_reported_as_tampering(tmp_path, monkeypatch):
    import threading
    import time

    import serving.engine.bundle as bundle_mod

    paths = [tmp_path / f"f{i}" for i in range(6)]
    for p in paths:
        p.write_bytes(b"x" * 1000)
    real = bundle_mod.sha256_file

    def failing(path):
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.05)  # slow here, so the helper thread surely takes files
            return real(path)
        raise MemoryError(f"simulated for {path.name}")

    monkeypatch.setattr(bundle_mod, "sha256_file", failing)
    with pytest.raises(MemoryError, match="simulated"):
        sha256_files(paths, [1] * 6)


def test_a_file_gone_between_the_folder_scan_and_its_hash_refuses_the_bundle_naming_it(bundle_copy, monkeypatch):
    """A station falls back from a refused bundle (BundleError); an OSError out of the load would crash its start."""
    import serving.engine.bundle as bundle_mod

    scan = bundle_mod._check_tree

    def scan_then_lose(root, listed):
        found = scan(root, listed)
        (bundle_copy / "explain" / "bank_source.npy").unlink()
        return found

    monkeypatch.setattr(bundle_mod, "_check_tree", scan_then_lose)
    with pytest.raises(BundleError, match=r"bank_source\.npy: could not be read"):
        load_bundle(bundle_copy)


def _refused_without_blocking(fn, fifo):
    """The BundleError message of ``fn()``, which must neither block on ``fifo`` nor succeed."""
    import threading

    outcome = []

    def run():
        try:
            fn()
        except BundleError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():
        with open(fifo, "wb"):  # release the blocked reader before failing
            pass
        pytest.fail(f"blocked on the FIFO {fifo}")
    assert outcome, "a FIFO was accepted"
    return outcome[0]


def test_a_fifo_put_in_a_listed_file_s_place_after_the_scan_is_refused_not_waited_on(bundle_copy, monkeypatch):
    """Opening a FIFO for reading blocks until someone writes to it: the station's start would hang for good."""
    import os

    import serving.engine.bundle as bundle_mod

    scan = bundle_mod._check_tree
    target = bundle_copy / "explain" / "bank_source.npy"

    def scan_then_swap(root, listed):
        found = scan(root, listed)
        target.unlink()
        os.mkfifo(target)
        return found

    monkeypatch.setattr(bundle_mod, "_check_tree", scan_then_swap)
    message = _refused_without_blocking(lambda: load_bundle(bundle_copy), target)
    assert "bank_source.npy: could not be read (not a regular file)" in message


def test_reading_an_array_refuses_a_fifo_naming_it(tmp_path):
    import os

    from serving.engine.bundle import read_array

    os.mkfifo(tmp_path / "bank.npy")
    message = _refused_without_blocking(lambda: read_array(tmp_path / "bank.npy"), tmp_path / "bank.npy")
    assert re.search(r"bank\.npy: not a readable \.npy array \(.*not a regular file", message)


def test_a_nul_in_a_listed_name_is_refused_naming_the_field(bundle_copy):
    mpath = bundle_copy / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["model\u0000.onnx"] = m["files"]["model.onnx"]
    m["model_file"] = "model\u0000.onnx"
    mpath.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="model_file .* is not a path inside the bundle"):
        load_bundle(bundle_copy)


def test_a_listed_file_that_is_a_folder_is_missing(bundle_copy):
    (bundle_copy / "explain" / "bank_source.npy").unlink()
    (bundle_copy / "explain" / "bank_source.npy").mkdir()
    with pytest.raises(BundleError, match="bank_source.npy: listed in the manifest but missing"):
        load_bundle(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "explain" / "bank_source.npy").unlink()
    with pytest.raises(BundleError, match="bank_source.npy: listed in the manifest but missing"):
        load_bundle(bundle_copy)


def test_other_schema_is_refused(bundle_copy):
    mpath = bundle_copy / "manifest.json"
    raw = json.loads(mpath.read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    mpath.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=re.escape(f"schema_version {SCHEMA_VERSION + 1}, this station reads schemas [1, 2]")):
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


def test_previous_schema_still_runs_without_a_fingerprint(bundle_dir, tmp_path):
    old = schema1_bundle(bundle_dir, tmp_path / "old")
    engine = AnomalyEngine.load(old)
    assert engine.bundle.manifest.schema_version == 1 and not engine.bundle.manifest.has_fingerprint
    img = np.zeros((200, 200, 3), np.uint8)
    r = engine.infer(img)
    assert np.isfinite(r.score) and r.embedding is None
