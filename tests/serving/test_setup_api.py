"""Setup mode's API and its refusals: who may change what, a config file edited without losing a comment or a key,
bad input refused with the file, folder or field named and nothing lost."""

import json
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.config import load_config, read_yaml
from serving.station.runtime import Station
from serving.station.setup import SetupError, with_roi, write_roi

COMMENTED = """# line 3, camera 1
station_id: line-3   # the sync folder's name
bundle: models/b     # written by lineguard enroll
source:
  kind: replay
  path: data/x
"""


def login(client, user, pw):
    return {"Authorization": "Bearer " + client.post("/api/login", json={"username": user, "password": pw}).json()["token"]}


def config_file(tmp_path, cfg):
    path = tmp_path / "station.yaml"
    path.write_text("# station\n" + yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False))
    return path


@pytest.fixture()
def client(tmp_path, make_config):
    """A finished replay station started from a config file, behind the real app."""
    station = Station(load_config(config_file(tmp_path, make_config()))).start()
    assert station.wait(30)
    yield TestClient(create_app(station)), station
    station.stop()


def test_roi_line_keeps_its_comment_and_is_added_after_the_bundle_when_missing():
    text = COMMENTED.replace("source:", "roi: null              # x,y,w,h\nsource:")
    assert with_roi(text, "1,2,300,400") == text.replace("roi: null", 'roi: "1,2,300,400"')
    added = with_roi(COMMENTED, "5,6,70,80")
    assert added.splitlines()[3].startswith('roi: "5,6,70,80"') and added.splitlines()[2].startswith("bundle:")
    assert yaml.safe_load(added) == {**yaml.safe_load(COMMENTED), "roi": "5,6,70,80"}
    assert with_roi(text, None) == text


def test_a_config_the_roi_cannot_be_set_in_safely_is_left_untouched(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text("{station_id: a, bundle: b, source: {kind: replay, path: x}}\n")
    with pytest.raises(SetupError, match="could not change only the 'roi' key.*Nothing was changed"):
        write_roi(flow, "1,2,300,300")
    assert flow.read_text() == "{station_id: a, bundle: b, source: {kind: replay, path: x}}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["flow.yaml"]  # no temporary file left behind


def test_every_setup_change_needs_an_engineer(client):
    c, station = client
    op = login(c, "olga", "op-pass")
    assert c.get("/api/setup", headers=op).json()["can_edit"] is False
    writes = [("PUT", "/api/setup/roi", {"roi": None}), ("POST", "/api/setup/baseline", {"name": "x", "count": 2}),
              ("POST", "/api/setup/baseline/stop", None), ("POST", "/api/setup/signal-test", None),
              ("PUT", "/api/setup/checklist/camera", {"done": True})]
    for method, path, body in writes:
        r = c.request(method, path, json=body, headers=op)
        assert r.status_code == 403 and "needs the engineer role" in r.json()["detail"], path
        assert c.request(method, path, json=body).status_code == 401, path
    assert [e for e in station.audit.entries() if e["action"].startswith("setup_")] == []


def test_the_setup_page_is_public_and_carries_the_content_security_policy(client):
    c, _ = client
    r = c.get("/setup")
    assert r.status_code == 200 and '<script src="/static/setup.js" defer></script>' in r.text
    assert "<script>" not in r.text and " style=" not in r.text  # nothing inline for the policy to allow
    assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    assert c.get("/static/setup.js").status_code == 200 and c.get("/static/setup.css").status_code == 200
    assert "innerHTML" not in c.get("/static/setup.js").text


def test_a_bad_roi_is_refused_by_name_and_the_config_file_stays_as_it_was(client):
    c, station = client
    eng = login(c, "eddie", "eng-pass")
    path = station.cfg.source_file
    text = path.read_text()
    r = c.put("/api/setup/roi", json={"roi": "0,0,400,300"}, headers=eng)
    assert r.status_code == 422 and "beyond the camera's 300x300 frame" in r.json()["detail"]
    r = c.put("/api/setup/roi", json={"roi": "0,0,20,20"}, headers=eng)
    assert r.status_code == 422 and "draw a larger ROI" in r.json()["detail"]
    r = c.put("/api/setup/roi", json={"roi": "a,b,c,d"}, headers=eng)
    assert r.status_code == 422 and r.json()["detail"].startswith("roi: String should match pattern")
    assert path.read_text() == text and station.cfg.roi is None
    path.write_text(text + "bundle: twice\n")  # someone broke the file by hand since the start
    r = c.put("/api/setup/roi", json={"roi": "0,0,200,200"}, headers=eng)
    assert r.status_code == 409 and str(path) in r.json()["detail"] and "appears twice" in r.json()["detail"]
    assert path.read_text() == text + "bundle: twice\n" and station.cfg.roi is None


def test_clearing_the_roi_returns_to_the_bundles_own(client):
    c, station = client
    eng = login(c, "eddie", "eng-pass")
    assert c.put("/api/setup/roi", json={"roi": " 10, 20 ,200,250"}, headers=eng).json()["roi"] == "10,20,200,250"
    assert read_yaml(station.cfg.source_file)["roi"] == "10,20,200,250"
    assert c.put("/api/setup/roi", json={"roi": None}, headers=eng).json()["roi"] is None
    assert read_yaml(station.cfg.source_file)["roi"] is None
    assert station.engine.roi == station.engine.bundle.manifest.roi and station.cfg.roi is None
    view = c.get("/api/setup", headers=eng).json()
    assert view["roi_from"] in ("bundle", "none")
    saved = [e["details"] for e in station.audit.entries() if e["action"] == "setup_roi_saved"]
    assert [(d["before"], d["after"]) for d in saved] == [(None, "10,20,200,250"), ("10,20,200,250", None)]


def test_a_station_built_without_a_config_file_says_the_roi_cannot_be_saved(make_config):
    station = Station(make_config()).start()
    try:
        assert station.wait(30)
        c = TestClient(create_app(station))
        eng = login(c, "eddie", "eng-pass")
        r = c.put("/api/setup/roi", json={"roi": "0,0,200,200"}, headers=eng)
        assert r.status_code == 409 and "not started from a config file" in r.json()["detail"]
        assert c.get("/api/setup", headers=eng).json()["config_file"] is None
    finally:
        station.stop()


def test_a_baseline_never_overwrites_and_names_its_folder(client):
    c, station = client
    eng = login(c, "eddie", "eng-pass")
    r = c.post("/api/setup/baseline", json={"name": "../escape", "count": 3}, headers=eng)
    assert r.status_code == 422 and r.json()["detail"].startswith("name: String should match pattern")
    good = station.cfg.source_file.parent / "baselines" / "taken" / "train" / "good"
    good.mkdir(parents=True)
    (good / "mine.png").write_bytes(b"not to be lost")
    r = c.post("/api/setup/baseline", json={"name": "taken", "count": 3}, headers=eng)
    assert r.status_code == 409 and str(good) in r.json()["detail"] and "nothing was overwritten" in r.json()["detail"]
    assert (good / "mine.png").read_bytes() == b"not to be lost"
    # the replay has ended: the capture says so instead of waiting for ever
    r = c.post("/api/setup/baseline", json={"name": "late", "count": 3}, headers=eng)
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while not (b := c.get("/api/setup", headers=eng).json()["baseline"])["done"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b["saved"] == 0 and "stopped inspecting after 0 of 3 frames" in b["error"]


def test_a_signal_test_counts_only_parts_after_its_start(client):
    c, station = client
    eng = login(c, "eddie", "eng-pass")
    assert station.state.counts["FAIL"] > 0  # the replay had defects, before the test
    r = c.post("/api/setup/signal-test", headers=eng).json()
    assert r["after_seq"] == station.state.last.seq and not r["passed"] and "actuator 'none'" in r["note"]
    time.sleep(0.3)
    assert c.get("/api/setup", headers=eng).json()["signal"]["fail_seq"] is None


def test_a_signal_test_starts_after_parts_already_triggered_but_not_yet_stored(make_config):
    """A part on the line before the test (inspected or waiting, its record still being written) cannot pass it."""
    from serving.station.setup.signal_test import SignalTest

    station = Station(make_config(max_frames=1))
    station.source.seq = 5  # five parts triggered; none stored yet (the after-part thread writes them)
    assert SignalTest(station, "eddie").after_seq == 5
    station.stop()


def test_a_damaged_checklist_file_is_named_and_kept(client):
    c, station = client
    eng = login(c, "eddie", "eng-pass")
    assert c.put("/api/setup/checklist/camera", json={"done": True, "note": "focus 410"}, headers=eng).status_code == 200
    path = station.cfg.source_file.parent / "setup-checklist.json"
    assert json.loads(path.read_text())["items"]["camera"]["note"] == "focus 410"
    path.write_text('{"version": 1, "items": {"camera": {"done": "maybe"}}}')
    view = c.get("/api/setup", headers=eng).json()
    assert str(path) in view["checklist_error"] and "items.camera.done" in view["checklist_error"]
    r = c.put("/api/setup/checklist/roi", json={"done": True}, headers=eng)
    assert r.status_code == 409 and "fix or move the file away" in r.json()["detail"]
    assert path.read_text() == '{"version": 1, "items": {"camera": {"done": "maybe"}}}'
    assert c.put("/api/setup/checklist/nothing", json={"done": True}, headers=eng).status_code == 404


def test_before_the_first_frame_there_is_nothing_to_show_or_to_check_a_roi_against(tmp_path, make_config):
    station = Station(load_config(config_file(tmp_path, make_config())))  # not started: no part inspected yet
    try:
        c = TestClient(create_app(station))
        eng = login(c, "eddie", "eng-pass")
        for path in ("/api/setup/live", "/api/setup/frame.png"):
            r = c.get(path, headers=eng)
            assert r.status_code == 404 and "no frame yet" in r.json()["detail"]
        text = station.cfg.source_file.read_text()
        r = c.put("/api/setup/roi", json={"roi": "0,0,200,200"}, headers=eng)
        assert r.status_code == 409 and "no camera frame seen yet" in r.json()["detail"]
        assert station.cfg.source_file.read_text() == text
        assert c.put("/api/setup/roi", json={"roi": None}, headers=eng).status_code == 200  # the bundle's own: safe
    finally:
        station.stop()


def test_without_a_reject_output_the_signal_test_proves_the_fail_only(tmp_path, make_config):
    station = Station(load_config(config_file(tmp_path, make_config(source={"rate_hz": 10, "loop": True})))).start()
    try:
        c = TestClient(create_app(station))
        eng = login(c, "eddie", "eng-pass")
        started = c.post("/api/setup/signal-test", headers=eng).json()
        assert started["pulse_observable"] is False and "proves the FAIL only" in started["note"]
        deadline = time.monotonic() + 20
        while not (sig := c.get("/api/setup", headers=eng).json()["signal"])["passed"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sig["passed"] and sig["fail_seq"] > started["after_seq"] and not sig["fail_rule"].startswith("fail_safe")
        passed = [e for e in station.audit.entries() if e["action"] == "setup_signal_test_passed"]
        assert len(passed) == 1 and passed[0]["details"]["actuator"] == "none"
    finally:
        station.stop()


def test_a_part_without_a_picture_leaves_the_last_frame_on_show_and_the_roi_checkable(client):
    c, station = client
    eng = login(c, "eddie", "eng-pass")
    seen = c.get("/api/setup/live", headers=eng).json()["seq"]
    with station._lock:  # the last part was dropped or failed before the engine: no picture of it
        station.state.last_view = None
    assert c.get("/api/setup/live", headers=eng).json()["seq"] == seen
    r = c.get("/api/setup/frame.png", headers=eng)
    assert r.status_code == 200 and r.headers["x-part-seq"] == str(seen)
    r = c.put("/api/setup/roi", json={"roi": "0,0,400,300"}, headers=eng)
    assert r.status_code == 422 and "300x300 frame" in r.json()["detail"]  # still checked against that frame
    assert c.put("/api/setup/roi", json={"roi": "0,0,200,200"}, headers=eng).status_code == 200
