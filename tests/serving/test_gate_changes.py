"""Gate changes through the API: finite values near the calibration, a confirmation for what lets parts through,
and kept across a restart (audited), with the config's own later edits winning."""

import json

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.api import create_app
from serving.station.audit import AuditTampered
from serving.station.gate_changes import validated_gate
from serving.station.runtime import Station


def started(cfg) -> Station:
    st = Station(cfg).start()
    assert st.wait(30)
    return st


def engineer(client) -> dict:
    r = client.post("/api/login", json={"username": "eddie", "password": "eng-pass"})
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture()
def station(make_config):
    st = started(make_config(max_frames=2))
    yield st
    st.stop()


def put_raw(client, h, text: str):
    return client.put("/api/gate", content=text, headers={**h, "Content-Type": "application/json"})


def test_non_finite_negative_and_far_off_thresholds_are_refused(station):
    client = TestClient(create_app(station))
    h = engineer(client)
    cal = station.engine.thresholds.image
    for text in ('{"image_threshold": NaN}', '{"image_threshold": Infinity}', '{"image_threshold": "-Infinity"}',
                 '{"image_threshold": -1}', '{"image_threshold": 0}', f'{{"image_threshold": {cal * 100}}}',
                 f'{{"image_threshold": {cal / 100}}}', '{"pixel_threshold": 1e300}', '{"deadline_ms": NaN}',
                 '{"class_confidence": {"crack": NaN}}',
                 '{"sop": [{"name": "x", "action": "fail_above_score", "value": Infinity}]}'):
        r = put_raw(client, h, text)
        assert r.status_code == 422, (text, r.text)
        assert next(iter(json.loads(text))) in r.json()["detail"], (text, r.json())
    r = put_raw(client, h, f'{{"image_threshold": {cal * 100}}}')
    assert "outside 0.2x..5x the bundle's calibrated" in r.json()["detail"]
    assert station.rules.image_threshold == cal and station.audit.entries() == []  # nothing changed, nothing logged


def test_what_lets_parts_through_needs_a_confirmation_and_is_audited_with_it(station):
    client = TestClient(create_app(station))
    h = engineer(client)
    cal = station.engine.thresholds.image
    for change in ({"on_error": "pass"}, {"sop": [{"name": "bypass", "action": "pass_all"}]},
                   {"image_threshold": cal * 3}):
        r = client.put("/api/gate", json=change, headers=h)
        assert r.status_code == 409 and "lets parts through" in r.json()["detail"] and "confirm" in r.json()["detail"]
    assert station.rules.on_error == "reject" and station.rules.sop == () and station.rules.image_threshold == cal
    r = client.put("/api/gate", json={"image_threshold": cal * 1.2}, headers=h)  # a small raise: no confirmation
    assert r.status_code == 200 and r.json()["image_threshold"] == pytest.approx(cal * 1.2)
    r = client.put("/api/gate", json={"on_error": "pass", "confirm": True}, headers=h)
    assert r.status_code == 200 and station.rules.on_error == "pass"
    entry = client.get("/api/audit", headers=h).json()["entries"][-1]
    assert entry["action"] == "gate_changed" and entry["user"] == "eddie" and entry["details"]["confirmed"] is True
    assert entry["details"]["after"] == {"on_error": "pass"} and entry["details"]["before"] == {"on_error": "reject"}
    assert "on_error: pass" in entry["details"]["lets_parts_through"][0]


def test_the_deadline_is_checked_against_the_reject_pulse_as_at_start(make_config):
    cfg = make_config(actuator={"kind": "modbus", "delay_ms": 150, "pulse_ms": 20})
    with pytest.raises(ValidationError, match="deadline_ms .* must be at most actuator.delay_ms"):
        validated_gate(cfg, {**cfg.gate.model_dump(), "deadline_ms": 500})


def test_a_gate_change_survives_a_restart_and_a_later_config_edit_wins(make_config):
    st = started(make_config(max_frames=2))
    client = TestClient(create_app(st))
    h = engineer(client)
    assert client.put("/api/gate", json={"min_area_px": 123, "on_error": "pass", "confirm": True},
                      headers=h).status_code == 200
    st.stop()

    again = started(make_config(max_frames=2))  # the same config file, read again
    assert again.rules.min_area_px == 123 and again.rules.on_error == "pass"
    assert again.cfg.gate.min_area_px == 123
    loaded = again.audit.entries()[-1]
    assert loaded["action"] == "gate_overrides_loaded" and loaded["details"]["changed"] == {"min_area_px": 123,
                                                                                            "on_error": "pass"}
    again.stop()

    # edited outside the station: refused at start, with the file named
    path = again.gate_overrides.path
    doc = json.loads(path.read_text())
    original = path.read_text()
    doc["gate"]["min_area_px"] = 999999
    path.write_text(json.dumps(doc))
    with pytest.raises(AuditTampered, match="gate_overrides .* changed outside the station"):
        Station(make_config(max_frames=2))
    path.write_text(original)

    # the engineer edits the config's gate afterwards: the config wins, the old overrides are set aside and shown
    edited = started(make_config(max_frames=2, gate={"min_area_px": 7, "deadline_ms": 140}))
    try:
        assert edited.rules.min_area_px == 7 and edited.rules.on_error == "reject"
        assert not path.exists() and any(a.name == "gate_overrides" for a in edited.alarms.active())
        assert edited.audit.entries()[-1]["action"] == "gate_overrides_superseded"
    finally:
        edited.stop()
