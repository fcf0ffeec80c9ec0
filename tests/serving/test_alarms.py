"""Alarms: state alarms clear with their cause, event alarms wait for an (audited) acknowledgement, all logged."""

import logging

from fastapi.testclient import TestClient

from serving.alarms import Alarms
from serving.api import create_app
from serving.station.runtime import Station


def test_state_alarm_clears_with_its_cause_and_event_alarm_waits_for_its_ack(caplog):
    caplog.set_level(logging.INFO, logger="lineguard.alarms")
    changes = []
    a = Alarms(on_change=lambda name, on: changes.append((name, on)))
    a.raise_("plc", "PLC unreachable")
    a.raise_("plc", "PLC unreachable")  # a repeat counts, and is not logged again
    a.event("pulse_missed", "part 7: reject pulse missed")
    a.clear("pulse_missed")  # an event has no cause to clear: it stays for the operator
    assert [x.name for x in a.active()] == ["plc", "pulse_missed"] and a.active()[0].count == 2
    assert a.acknowledge("plc", "olga").acked_by == "olga" and a.is_active("plc")  # seen, but the PLC is still down
    a.clear("plc")
    assert a.acknowledge("pulse_missed", "olga") is not None and a.active() == []
    text = caplog.text
    assert text.count("ALARM plc raised") == 1 and "ALARM plc cleared after" in text
    assert "ALARM pulse_missed raised" in text and "ALARM pulse_missed acknowledged by olga" in text
    assert ("plc", False) in changes and ("pulse_missed", False) in changes


def test_acknowledging_on_the_page_is_audited(make_config):
    station = Station(make_config(max_frames=1))
    client = TestClient(create_app(station))
    token = client.post("/api/login", json={"username": "olga", "password": "op-pass"}).json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    station.alarms.event("late_decision", "part 3: decision 12 ms after its reject time")
    shown = client.get("/api/state", headers=h).json()["alarms"]
    assert shown[0]["name"] == "late_decision" and shown[0]["kind"] == "event" and shown[0]["acked_by"] is None
    assert client.post("/api/alarms/late_decision/ack", headers=h).status_code == 200
    assert client.get("/api/state", headers=h).json()["alarms"] == []
    entry = station.audit.entries()[-1]
    assert entry["action"] == "alarm_acknowledged" and entry["user"] == "olga"
    assert entry["details"]["alarm"] == "late_decision"
    assert client.post("/api/alarms/nothing/ack", headers=h).status_code == 404
    assert client.post("/api/stop-line/reset", headers=h).status_code == 409  # nothing to reset
    station.stop()
