"""The station's drift watch and recalibration capture, end to end through the station and its API."""

import json

import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.drift.capture import CaptureRequest
from serving.evidence.export import export_capture
from serving.station.runtime import Station

STAB = {"window": 10, "min_parts": 5}


def login(client, user, pw):
    return {"Authorization": f"Bearer {client.post('/api/login', json={'username': user, 'password': pw}).json()['token']}"}


@pytest.fixture()
def run_station(make_config):
    made = []

    def run(capture: int | None = None, **sections):
        sections.setdefault("source", {"rate_hz": 5})  # slow enough that no part is dropped on a busy CI machine
        st = Station(make_config(stability=STAB, **sections))
        if capture:
            st.normals.start_capture(CaptureRequest(parts=capture), "eddie")
        st.start()
        assert st.wait(30)
        made.append(st)
        return st, TestClient(create_app(st))

    yield run
    for st in made:
        st.stop()


def test_every_record_carries_its_drift_figures_and_the_index(run_station):
    st, client = run_station()
    recs = st.evidence.query(limit=100, order="id")
    assert len(recs) == 12
    dims = st.engine.bundle.manifest.baseline.embedding_dims
    for r in recs:
        assert len(r.embedding) == dims and r.luminance > 0 and r.sharpness > 0 and r.color_balance is not None
        assert 0 <= r.stability_index <= 100
    assert [r.stability_index for r in recs[:4]] == [100.0] * 4  # fewer than min_parts: no verdict yet
    s = client.get("/api/state", headers=login(client, "olga", "op-pass")).json()["stability"]
    assert s["available"] and s["parts"] == 10 and 0 <= s["index"] <= 100
    assert {c["name"] for c in s["components"]} == {"score", "feature", "false_rejects", "lighting", "focus"}
    lo, hi = s["frr_interval"]
    assert lo <= s["frr_expected"] <= hi and s["frr_observed"] == 0.0
    metrics = client.get("/metrics").text
    assert "lineguard_stability_index " in metrics and 'lineguard_stability_component{component="focus"}' in metrics


def test_false_alarm_overrides_move_the_index_by_a_binomial_test(run_station):
    st, client = run_station()
    h = login(client, "olga", "op-pass")
    fails = [r for r in st.evidence.query("verdict='FAIL'", limit=100)]
    passes = [r for r in st.evidence.query("verdict='PASS'", limit=100)]
    assert fails and passes
    client.post(f"/api/review/{passes[0].id}", json={"disposition": "false_alarm"}, headers=h)
    assert st.stability.report.false_alarms == 0  # a PASS part cannot be a false reject
    for r in fails[:4]:
        assert client.post(f"/api/review/{r.id}", json={"disposition": "false_alarm"}, headers=h).status_code == 200
    rep = st.stability.report
    assert rep.false_alarms == min(4, len(fails))
    comp = rep.components["false_rejects"]
    assert comp.score < 80 and "false alarms in 10 parts" in comp.detail and "p = " in comp.detail
    s = client.get("/api/state", headers=h).json()["stability"]
    assert s["frr_observed"] == pytest.approx(rep.false_alarms / 10)


def test_a_capture_tags_parts_and_the_operator_confirms_them_in_bulk(run_station, tmp_path):
    st, client = run_station(capture=10)
    h = login(client, "olga", "op-pass")
    cap = client.get("/api/capture", headers=h).json()
    assert cap["done"] and cap["count"] == 10 and len(cap["candidates"]) == 10 and cap["started_by"] == "eddie"
    tagged = st.evidence.query("capture_id=?", (cap["id"],), limit=100)
    assert len(tagged) == 10 and all(r.crop_file for r in tagged)  # pictures kept whatever the sampling
    assert any(a.name == "capture" for a in st.alarms.active())
    queue = client.get("/api/review", headers=h).json()["items"]
    assert not {i["id"] for i in queue} & {c["id"] for c in cap["candidates"]}  # not review suspects
    flagged = [c["id"] for c in cap["candidates"] if c["flagged"]]
    plain = [c["id"] for c in cap["candidates"] if not c["flagged"]]
    r = client.post(f"/api/capture/{cap['id']}/confirm", json={"exclude": plain[:1]}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": cap["id"], "normal": len(plain) - 1, "excluded": 1 + len(flagged)}
    disp = {x.id: x.disposition for x in st.evidence.query("capture_id=?", (cap["id"],), limit=100)}
    assert disp[plain[0]] == "excluded" and all(disp[i] == "excluded" for i in flagged)
    assert sum(v == "normal" for v in disp.values()) == len(plain) - 1
    audit = [json.loads(line) for line in open(st.cfg.api.audit_log)]
    assert any(a["action"] == "capture_confirmed" and a["user"] == "olga" for a in audit)
    assert not any(a.name == "capture" for a in st.alarms.active())

    counts = export_capture(st.cfg.evidence, st.cfg.station_id, cap["id"], tmp_path / "normals")
    assert counts["normal"] == len(plain) - 1
    assert len(list((tmp_path / "normals" / "good").glob("*.png"))) == len(plain) - 1
    meta = json.loads((tmp_path / "normals" / "capture.json").read_text())
    assert meta["roi_applied"] is True and meta["confirmed_by"] == ["olga"] and meta["captured"] == 10


def test_capture_requests_are_checked(run_station):
    st, client = run_station()
    h = login(client, "olga", "op-pass")
    assert client.get("/api/capture", headers=h).json() is None
    r = client.post("/api/capture", json={}, headers=h)
    assert r.status_code == 422 and "parts" in r.text
    assert client.post("/api/capture", json={"parts": 3}, headers=h).status_code == 422  # too few to recalibrate from
    cap = client.post("/api/capture", json={"parts": 50}, headers=h).json()
    assert not cap["done"]
    assert client.post("/api/capture", json={"parts": 50}, headers=h).status_code == 409  # one at a time
    assert client.post(f"/api/capture/{cap['id']}/confirm", json={}, headers=h).status_code == 409  # still running
    assert client.post("/api/capture/stop", headers=h).json()["done"]
    r = client.post(f"/api/capture/{cap['id']}/confirm", json={"exclude": [999999]}, headers=h)
    assert r.status_code == 422 and "not candidates" in r.text
    assert client.post("/api/capture/cap-nope/confirm", json={}, headers=h).status_code == 404


def test_a_previous_schema_bundle_runs_and_says_it_has_no_stability_index(bundle_dir, test_images, tmp_path):
    from helpers import schema1_bundle, station_config

    old = schema1_bundle(bundle_dir, tmp_path / "old")
    st = Station(station_config(tmp_path, old, test_images, source={"rate_hz": 5}))
    st.start()
    assert st.wait(30)
    try:
        client = TestClient(create_app(st))
        assert st.state.frames == 12 and all(r.embedding is None for r in st.evidence.query(limit=100))
        alarm = next(a for a in st.alarms.active() if a.name == "drift_unavailable")
        assert alarm.level == "warning" and "re-export" in alarm.message
        s = client.get("/api/state", headers=login(client, "olga", "op-pass")).json()["stability"]
        assert s["available"] is False and s["index"] is None
    finally:
        st.stop()


def test_a_finished_captures_candidates_include_its_parts_still_being_written(make_config):
    """The capture ends on the inspection thread while its last parts' records are still on the after-part thread:
    the candidate list the operator confirms must wait for them."""
    import time

    from serving.api.routes.capture import capture_view
    from serving.evidence import InspectionRecord

    station = Station(make_config(max_frames=1))
    cap = station.normals.start_capture(CaptureRequest(parts=10), "olga")
    cap.stop()
    station.after.start()

    def write_last_part():
        time.sleep(0.3)  # a slow evidence write
        station.evidence.record(InspectionRecord(station_id="test-line", seq=1, t_trigger_ns=1, wall_time=time.time(),
                                                 verdict="PASS", rule="anomaly", score=1.0, capture_id=cap.id))

    station.after.submit(write_last_part)
    view = capture_view(station)
    station.stop()
    assert view.done and [c.seq for c in view.candidates] == [1]
