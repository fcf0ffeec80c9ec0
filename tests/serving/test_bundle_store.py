"""The station's bundle store under attack and damage (found by review): what runs is what was checked, uploads
cannot blow up memory or inodes, the optimised-graph cache cannot be planted, damaged state is named."""

import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers import edit_manifest, new_version, resign
from serving.api import create_app
from serving.engine.bundle import MANIFEST, load_bundle
from serving.engine.signing import SIGNATURE_FILE
from serving.errors import BundleError
from serving.station.bundle_store import BundleStore
from serving.station.upload import MAX_HEADER
from serving.station.runtime import Station


def eng_client(station):
    client = TestClient(create_app(station))
    tok = client.post("/api/login", json={"username": "eddie", "password": "eng-pass"}).json()["token"]
    client.headers["Authorization"] = f"Bearer {tok}"
    return client


def version(path):
    return load_bundle(path).manifest.bundle_version


def test_what_runs_is_the_bundle_that_was_checked_not_one_swapped_in_meanwhile(make_config, bundle_dir, tmp_path,
                                                                               monkeypatch):
    st = Station(make_config())
    try:
        newer = new_version(bundle_dir, tmp_path / "newer", hours=5)
        older = new_version(bundle_dir, tmp_path / "older", hours=-240)  # genuinely signed, older than running
        checked = version(newer)
        keep = BundleStore.keep_copy

        def swap_then_copy(self, bundle):  # the folder changes right after it was checked
            for name in (MANIFEST, SIGNATURE_FILE):
                shutil.copyfile(older / name, newer / name)
            return keep(self, bundle)
        monkeypatch.setattr(BundleStore, "keep_copy", swap_then_copy)
        st.reload_bundle(newer, "eddie")
        assert st.engine.bundle.manifest.bundle_version == checked != version(older)
        assert (st.engine.bundle.root / MANIFEST).read_bytes() != (older / MANIFEST).read_bytes()
        assert st.store.history("anomaly")[-1] == checked and st.engine.bundle.root.exists()
    finally:
        st.evidence.close()


def test_rollback_returns_to_what_ran_even_if_the_config_folder_was_re_exported(make_config, bundle_dir, tmp_path):
    folder = tmp_path / "config-bundle"
    shutil.copytree(bundle_dir, folder, ignore=shutil.ignore_patterns("enrollment.pt"))
    st = Station(make_config(bundle=str(folder)))
    try:
        first = st.engine.bundle.manifest.bundle_version
        assert st.engine.bundle.root.is_relative_to(st.store.root)  # it runs the station's own copy
        shutil.rmtree(folder)
        new_version(bundle_dir, folder, hours=9)  # an engineer re-exports into the folder the config names
        st.reload_bundle(new_version(bundle_dir, tmp_path / "v2", hours=2), "eddie")
        assert st.rollback_bundle("eddie") == first
        assert (st.engine.bundle.root / MANIFEST).read_bytes() == (bundle_dir / MANIFEST).read_bytes()
    finally:
        st.evidence.close()


def test_a_damaged_deployed_copy_falls_back_with_an_alarm_and_a_redeploy_repairs_it(make_config, bundle_dir, tmp_path):
    st = Station(make_config())
    v2 = new_version(bundle_dir, tmp_path / "v2", hours=2)
    st.reload_bundle(v2, "eddie")
    stored = st.engine.bundle.root
    st.evidence.close()
    with open(stored / "model.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff")
    again = Station(make_config())
    try:
        assert any(a.name == "bundle" and "cannot run" in a.message for a in again.alarms.active())
        assert again.engine.bundle.manifest.bundle_version == version(bundle_dir)
        again.reload_bundle(v2, "eddie")  # the same version again replaces the damaged copy
        assert again.engine.bundle.manifest.bundle_version == version(v2)
    finally:
        again.evidence.close()


def test_a_malformed_history_file_is_named(make_config, tmp_path):
    cfg = make_config()
    os.makedirs(cfg.bundles.store, exist_ok=True)
    (tmp_path / "bundles" / "active.json").write_text('{"anomaly": []}')
    with pytest.raises(BundleError, match=r"active.json: unreadable .*fix or delete it"):
        Station(cfg)


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_upload_bombs_are_refused_cheaply(station):
    client = eng_client(station)
    big = tarfile.TarInfo("manifest.json")
    big.pax_headers = {"comment": "x" * (MAX_HEADER * 4)}
    big.size = 2
    r = client.post("/api/bundle/upload", content=_tar([(big, b"{}")]))
    assert r.status_code == 409 and "extension header" in r.json()["detail"]
    many = []
    for i in range(20_001):
        info = tarfile.TarInfo(f"d{i}")
        info.type = tarfile.DIRTYPE
        many.append((info, None))
    r = client.post("/api/bundle/upload", content=_tar(many))
    assert r.status_code == 409 and "more than 20000 entries" in r.json()["detail"]
    assert list((station.store.root / "staging").iterdir()) == []


def test_a_graph_cache_others_can_write_is_not_used(bundle_copy, tmp_path, monkeypatch):
    from serving.engine.anomaly import AnomalyEngine

    cache = tmp_path / "ort"
    monkeypatch.setenv("LINEGUARD_ORT_CACHE", str(cache))
    AnomalyEngine.load(bundle_copy)  # fills the cache
    assert AnomalyEngine.load(bundle_copy).backend.cached
    os.chmod(cache, 0o777)  # anyone could now plant a graph there
    assert not AnomalyEngine.load(bundle_copy).backend.cached
    os.chmod(cache, 0o700)
    planted = next(cache.glob("*.onnx"))
    os.chmod(planted, 0o666)
    assert not AnomalyEngine.load(bundle_copy).backend.cached


@pytest.mark.parametrize("field, value, match", [
    ("bundle_version", "../../../x", "bundle_version"),
    ("created_at", "2026-11-27T10:00:00", "no UTC offset"),
])
def test_names_and_times_a_station_acts_on_are_validated(bundle_copy, field, value, match):
    def change(raw):
        if field == "created_at":
            raw["provenance"]["created_at"] = value
        else:
            raw[field] = value
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=match):
        load_bundle(resign(bundle_copy))


def test_a_threshold_far_above_its_normals_fails_the_smoke_test(station, bundle_dir, tmp_path):
    client = eng_client(station)
    lax = new_version(bundle_dir, tmp_path / "lax", hours=3, threshold_factor=1000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(lax, arcname=".")
    r = client.post("/api/bundle/upload", content=buf.getvalue())
    assert r.status_code == 409 and "defects would pass" in r.json()["detail"]


def test_explain_and_bench_paths_must_be_listed(bundle_copy):
    edit_manifest(bundle_copy, lambda raw: raw["explain"].__setitem__("index", "enrollment.pt"))
    with pytest.raises(BundleError, match=r"explain.index 'enrollment.pt' is not listed"):
        load_bundle(resign(bundle_copy))


def test_history_is_valid_json_with_versions_only(make_config, bundle_dir, tmp_path):
    st = Station(make_config())
    try:
        data = json.loads((st.store.root / "active.json").read_text())
        assert data["anomaly"]["history"] == [version(bundle_dir)] and np.all([isinstance(v, str) for v in
                                                                                 data["anomaly"]["history"]])
    finally:
        st.evidence.close()
