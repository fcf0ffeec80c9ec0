"""Triggers through a real station: PLC coil and PLC counter timestamps against the PLC's own trigger times,
and the HTTP trigger with a per-device key."""


import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.station.runtime import Station
from services import events, plc_sim

SIM_MAP = {"hr_encoder": 10, "hr_plc_clock": 11, "hr_trigger_count": 12}


def trigger_errors_ms(make_config, tmp_path, trigger: str) -> np.ndarray:
    with plc_sim(tmp_path, "--trigger-period-ms", "150") as (port, edges):
        cfg = make_config(max_frames=8, source={"trigger": trigger, "trigger_poll_ms": 1},
                          actuator={"kind": "modbus", "modbus": {"port": port, **SIM_MAP}})
        station = Station(cfg).start()
        assert station.wait(30)
        recs = station.evidence.query(limit=100, order="seq")
        station.stop()
    truth = np.array([e["t_ns"] for e in events(edges, "plc_trigger")])
    assert len(recs) == 8
    got = np.array([r.t_trigger_ns for r in recs[1:]])  # the first may be a trigger already pending at start-up
    nearest = truth[np.abs(truth[None, :] - got[:, None]).argmin(1)]
    assert len(set(nearest)) == len(got)  # one part per PLC trigger, none twice
    return (got - nearest) / 1e6


@pytest.mark.services
def test_counter_trigger_time_comes_from_the_plc_clock_not_the_poll(make_config, tmp_path):
    err = trigger_errors_ms(make_config, tmp_path, "modbus_counter")
    print("counter trigger errors (ms):", np.round(err, 2))
    # all but the first readings of the PLC clock pin it to within a millisecond or so
    assert np.median(np.abs(err)) < 2.0 and sorted(np.abs(err))[-2] < 3.0 and np.max(np.abs(err)) < 10.0, err


@pytest.mark.services
def test_coil_trigger_gives_one_part_per_plc_trigger(make_config, tmp_path):
    # its timestamp depends on when the station's poll gets the CPU: benchmarks/bench_lineio.py measures it.
    # The edge is stamped between two poll round-trips' midpoints, so it may precede the PLC's set by half the
    # poll gap plus half a round trip (3.2 ms seen in CI on a loaded machine); the bound only says it is this
    # trigger's stamp, not one from a poll of the previous 150 ms cycle.
    err = trigger_errors_ms(make_config, tmp_path, "modbus")
    assert np.all(err > -20.0), err


def test_http_trigger_with_a_device_key_that_can_do_nothing_else_and_can_be_revoked(make_config, tmp_path):
    station = Station(make_config(source={"trigger": "http"}, max_frames=2))
    client = TestClient(create_app(station))
    station.start()
    eng = {"Authorization": "Bearer " + client.post("/api/login", json={"username": "eddie", "password": "eng-pass"})
           .json()["token"]}
    op = {"Authorization": "Bearer " + client.post("/api/login", json={"username": "olga", "password": "op-pass"})
          .json()["token"]}
    assert client.post("/api/device-keys", json={"name": "press-7"}, headers=op).status_code == 403
    made = client.post("/api/device-keys", json={"name": "press-7"}, headers=eng).json()
    key = {"X-Device-Key": made["key"]}
    assert made["scope"] == "trigger" and made["key"] not in (tmp_path / "device-keys.json").read_text()
    assert client.post("/api/trigger", headers=key).status_code == 200
    assert client.get("/api/state", headers=key).status_code == 401  # a device key opens the trigger only
    assert client.put("/api/gate", json={"min_area_px": 1}, headers=key).status_code == 401
    assert client.post("/api/trigger", headers={"X-Device-Key": "lgd_guess"}).status_code == 401
    assert [d["name"] for d in client.get("/api/device-keys", headers=eng).json()] == ["press-7"]
    assert client.delete("/api/device-keys/press-7", headers=eng).status_code == 200
    assert client.post("/api/trigger", headers=key).status_code == 401  # revoked at once
    assert client.post("/api/trigger", headers=op).status_code == 200  # an operator may still trigger by hand
    assert station.wait(10)
    recs = station.evidence.query(limit=10, order="seq")
    station.stop()
    assert [r.seq for r in recs] == [1, 2]
    actions = [e["action"] for e in station.audit.entries()]
    assert actions.count("device_key_created") == 1 and actions.count("device_key_revoked") == 1
