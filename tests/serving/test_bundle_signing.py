"""Signed bundles: what an outsider or an insider tried against the station's bundle loading, each refused.

Attacks from issue 11 (section 5): an edited threshold that needs no hash, a swapped graph with its hash
recomputed, unlisted files, paths out of the bundle, links, an older version, plus uploads, the store
of versions, rollback and the smoke test on stored normals.
"""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import edit_manifest, new_version, pipeline_test_key, resign
from serving.api import create_app
from serving.engine.bundle import MANIFEST, file_entries, load_bundle
from serving.engine.signing import SIGNATURE_FILE, Trust, create_keypair, load_private_key, sign_manifest
from serving.errors import BundleError
from serving.station.runtime import Station


@pytest.fixture()
def trust():
    return Trust.from_files([str(pipeline_test_key()[1])])


def tar_of(bundle: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(bundle, arcname=".")
    return buf.getvalue()


@pytest.fixture()
def eng(station):
    client = TestClient(create_app(station))
    r = client.post("/api/login", json={"username": "eddie", "password": "eng-pass"})
    client.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return client


# ------------------------------------------------------------------ the signature
def test_a_signed_bundle_names_its_signer(bundle_copy, trust):
    b = load_bundle(bundle_copy, trust=trust)
    assert b.signature.signed and b.signature.signer == "pipeline"


def test_an_edited_threshold_breaks_the_signature(bundle_copy, trust):
    edit_manifest(bundle_copy, lambda raw: raw["thresholds"].__setitem__("image", 1e9))
    load_bundle(bundle_copy)  # the hashes alone still match: this is what used to pass
    with pytest.raises(BundleError, match="signature does not match manifest.json"):
        load_bundle(bundle_copy, trust=trust)


def test_a_swapped_graph_with_its_hash_recomputed_is_refused(bundle_copy, trust):
    with open(bundle_copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    edit_manifest(bundle_copy, lambda raw: raw["files"].update(
        {"model.onnx": file_entries(bundle_copy, ["model.onnx"])["model.onnx"].model_dump()}))
    with pytest.raises(BundleError, match="signature does not match"):
        load_bundle(bundle_copy, trust=trust)


def test_unsigned_and_untrusted_bundles_are_refused(bundle_copy, trust, tmp_path):
    other_key, _ = create_keypair(tmp_path / "keys" / "intruder")
    sign_manifest(bundle_copy, load_private_key(other_key), "pipeline")  # a stranger's key, a trusted name
    with pytest.raises(BundleError, match="does not trust"):
        load_bundle(bundle_copy, trust=trust)
    (bundle_copy / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError, match="unsigned bundle"):
        load_bundle(bundle_copy, trust=trust)
    assert not load_bundle(bundle_copy, trust=Trust(trust.keys, allow_unsigned=True)).signature.signed


# ------------------------------------------------------------------ paths and files
@pytest.mark.parametrize("attack", ["unlisted", "parent_path", "absolute_path", "symlink_out", "symlinked_file"])
def test_paths_must_stay_inside_and_every_file_be_listed(bundle_copy, trust, tmp_path, attack):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.onnx").write_bytes((bundle_copy / "model.onnx").read_bytes())
    entry = file_entries(bundle_copy, ["model.onnx"])["model.onnx"].model_dump()
    if attack == "unlisted":
        (bundle_copy / "explain" / "extra.bin").write_bytes(b"payload")
        match = "not listed in the manifest"
    elif attack == "parent_path":
        edit_manifest(bundle_copy, lambda raw: (raw.__setitem__("model_file", "../elsewhere/model.onnx"),
                                                raw["files"].__setitem__("../elsewhere/model.onnx", entry)))
        match = "not a path inside the bundle"
    elif attack == "absolute_path":
        edit_manifest(bundle_copy, lambda raw: (raw.__setitem__("model_file", str(outside / "model.onnx")),
                                                raw["files"].__setitem__(str(outside / "model.onnx"), entry)))
        match = "not a path inside the bundle"
    elif attack == "symlink_out":
        os.symlink(outside, bundle_copy / "bench" / "link")
        match = "a link inside the bundle"
    else:
        (bundle_copy / "model.onnx").unlink()
        os.symlink(outside / "model.onnx", bundle_copy / "model.onnx")
        match = "leads outside the bundle folder"
    resign(bundle_copy)  # even with a valid signature: the path rules hold on their own
    with pytest.raises(BundleError, match=match):
        load_bundle(bundle_copy, trust=trust)


# ------------------------------------------------------------------ the running station
def test_hot_swap_of_a_tampered_threshold_is_refused_and_audited(station, eng, bundle_copy):
    before = station.engine.bundle.manifest.bundle_version
    edit_manifest(bundle_copy, lambda raw: raw["thresholds"].__setitem__("image", 1e9))
    r = eng.post("/api/bundle", json={"path": str(bundle_copy)})
    assert r.status_code == 409 and "signature does not match" in r.json()["detail"]
    assert station.engine.bundle.manifest.bundle_version == before and station.rules.image_threshold < 1e9
    assert station.audit.entries()[-1]["action"] == "bundle_refused" and station.alarms.is_active("bundle")


def test_same_version_with_another_manifest_is_refused(station, eng, bundle_copy):
    edit_manifest(bundle_copy, lambda raw: raw["thresholds"].__setitem__("image", raw["thresholds"]["image"] * 5))
    r = eng.post("/api/bundle", json={"path": str(resign(bundle_copy))})
    assert r.status_code == 409 and "different manifest" in r.json()["detail"]


def test_an_older_version_is_refused_unless_rolled_back(station, eng, bundle_dir, tmp_path):
    older = new_version(bundle_dir, tmp_path / "older", hours=-24)
    r = eng.post("/api/bundle", json={"path": str(older)})
    assert r.status_code == 409 and "older than the running" in r.json()["detail"]


def test_upload_keep_n_and_rollback_restore_exactly_the_previous_version(station, eng, bundle_dir, tmp_path):
    first = station.engine.bundle
    versions = [new_version(bundle_dir, tmp_path / f"v{i}", hours=i) for i in (1, 2, 3)]
    for v in versions:
        r = eng.post("/api/bundle/upload", content=tar_of(v), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
    names = [load_bundle(v).manifest.bundle_version for v in versions]
    assert station.engine.bundle.manifest.bundle_version == names[-1]
    assert station.engine.bundle.signature.signer == "pipeline"
    hist = station.store.history("anomaly")
    assert hist == names, hist  # keep_versions 3: the first one fell out of the history and off the disk
    assert sorted(p.name for p in (station.store.root / "anomaly").iterdir()) == sorted(names)
    assert first.manifest.bundle_version not in hist
    r = eng.post("/api/bundle/rollback", json={"kind": "anomaly"})
    assert r.status_code == 200, r.text
    now = station.engine.bundle
    assert now.manifest.bundle_version == names[1]
    assert (now.root / MANIFEST).read_bytes() == (versions[1] / MANIFEST).read_bytes()
    assert station.store.history("anomaly") == names[:2]
    acts = [e["action"] for e in station.audit.entries()]
    assert acts.count("bundle_loaded") == 3 and acts[-1] == "bundle_rolled_back"
    assert station.audit.entries()[-1]["user"] == "eddie"


def test_a_restart_runs_the_deployed_version(make_config, bundle_dir, tmp_path):
    cfg = make_config()
    st = Station(cfg)
    v1 = new_version(bundle_dir, tmp_path / "v1", hours=1)
    st.reload_bundle(v1, "eddie")
    st.evidence.close()
    again = Station(make_config())
    assert again.engine.bundle.manifest.bundle_version == load_bundle(v1).manifest.bundle_version
    again.evidence.close()


def test_upload_refuses_links_and_paths_out_of_the_archive(station, eng, bundle_copy):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(bundle_copy, arcname=".")
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    r = eng.post("/api/bundle/upload", content=buf.getvalue())
    assert r.status_code == 409 and "leaves the bundle folder" in r.json()["detail"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    r = eng.post("/api/bundle/upload", content=buf.getvalue())
    assert r.status_code == 409 and "link or device" in r.json()["detail"]
    r = eng.post("/api/bundle/upload", content=b"not a tar at all")
    assert r.status_code == 409 and "not a tar archive" in r.json()["detail"]
    assert list((station.store.root / "staging").iterdir()) == []


def test_smoke_test_refuses_a_signed_bundle_that_rejects_its_own_normals(station, eng, bundle_dir, tmp_path):
    before = station.engine.bundle.manifest.bundle_version
    bad = new_version(bundle_dir, tmp_path / "bad", hours=5, threshold_factor=0.5)
    r = eng.post("/api/bundle/upload", content=tar_of(bad))
    assert r.status_code == 409 and "smoke test failed" in r.json()["detail"], r.text
    assert "would reject its own normals" in r.json()["detail"]
    assert station.engine.bundle.manifest.bundle_version == before
    assert not (station.store.root / "anomaly" / load_bundle(bad).manifest.bundle_version).exists()


def test_unsigned_bundle_runs_only_when_allowed_and_never_quietly(make_config, bundle_copy):
    (bundle_copy / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError, match="unsigned bundle"):
        Station(make_config(bundle=str(bundle_copy)))
    st = Station(make_config(bundle=str(bundle_copy), bundles={"allow_unsigned": True}))
    try:
        assert st.alarms.is_active("unsigned_bundle")
        client = TestClient(create_app(st))
        tok = client.post("/api/login", json={"username": "olga", "password": "op-pass"}).json()["token"]
        state = client.get("/api/state", headers={"Authorization": f"Bearer {tok}"}).json()
        assert state["bundle_unsigned"] is True and state["bundle_signer"] is None
    finally:
        st.evidence.close()


def test_verify_command_reports_the_signer(bundle_copy, make_config, tmp_path):
    import yaml

    cfg = tmp_path / "station.yaml"
    cfg.write_text(yaml.safe_dump(make_config().model_dump(mode="json")))
    out = subprocess.run([sys.executable, "-m", "serving.cli", "verify", "--config", str(cfg), str(bundle_copy)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "signed by pipeline" in out.stdout, out.stdout + out.stderr
    edit_manifest(bundle_copy, lambda raw: raw["thresholds"].__setitem__("image", 1e9))
    out = subprocess.run([sys.executable, "-m", "serving.cli", "verify", "--config", str(cfg), str(bundle_copy)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "signature does not match" in out.stderr


def test_a_switch_mid_stream_drops_no_part(make_config, bundle_dir, test_images, tmp_path):
    """Upload while parts flow: every part gets a real verdict, the old version's until the swap, then the new."""
    import time

    st = Station(make_config(source={"rate_hz": 2}))
    client = TestClient(create_app(st))
    tok = client.post("/api/login", json={"username": "eddie", "password": "eng-pass"}).json()["token"]
    v1 = new_version(bundle_dir, tmp_path / "v1", hours=1)
    st.start()
    try:
        while st.state.frames < 2:
            time.sleep(0.05)
        r = client.post("/api/bundle/upload", content=tar_of(v1), headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200, r.text
        assert st.wait(60)
    finally:
        st.stop()
    from serving.evidence.store import EvidenceStore

    store = EvidenceStore(st.cfg.evidence, st.alarms, st.cfg.station_id)
    try:
        recs = store.query(limit=100, order="id")
    finally:
        store.close()
    n_images = sum(1 for p in test_images.rglob("*") if p.is_file())
    assert len(recs) == n_images and not [r for r in recs if r.rule.startswith("fail_safe")]
    versions = [r.bundle_version for r in recs]
    old, new = load_bundle(bundle_dir).manifest.bundle_version, load_bundle(v1).manifest.bundle_version
    switch = versions.index(new)
    assert 2 <= switch < len(versions) and set(versions[:switch]) == {old} and set(versions[switch:]) == {new}
