"""Record ids and part numbers: an id beyond SQLite's integer range is a 422 (never a 500), and a station's
sequence numbers continue across restarts -- also after retention deleted every earlier record."""

import time

import pytest
from fastapi.testclient import TestClient

from serving.evidence.retention import enforce_limits
from serving.station.runtime import Station


@pytest.fixture()
def client(make_config):
    from serving.api import create_app

    st = Station(make_config(max_frames=2)).start()
    assert st.wait(30)
    yield TestClient(create_app(st), raise_server_exceptions=False)
    st.stop()


def test_an_id_beyond_sqlite_integers_is_a_422_on_every_id_route(client):
    r = client.post("/api/login", json={"username": "olga", "password": "op-pass"})
    h = {"Authorization": f"Bearer {r.json()['token']}"}
    for rid in (2**63, 10**30, 0, -1):
        assert client.get(f"/api/evidence/{rid}/crop.png", headers=h).status_code == 422, rid
        post = client.post(f"/api/review/{rid}", json={"disposition": "defect"}, headers=h)
        assert post.status_code == 422, rid
        assert "rid" in post.text  # names the field
    # the largest id SQLite can hold is a valid id: just not a record here
    assert client.get(f"/api/evidence/{2**63 - 1}/crop.png", headers=h).status_code == 404
    assert client.post(f"/api/review/{2**63 - 1}", json={"disposition": "defect"}, headers=h).status_code == 404


def run(cfg) -> str:
    """One run of a replay station over the evidence folder of ``cfg``; its boot id."""
    st = Station(cfg).start()
    assert st.wait(30)
    st.stop()
    return st.boot_id


def seqs(cfg):
    from serving.alarms import Alarms
    from serving.evidence import EvidenceStore

    ev = EvidenceStore(cfg.evidence, Alarms(), cfg.station_id)
    try:
        return [(r.boot_id, r.seq) for r in ev.query(limit=10_000, order="id")]
    finally:
        ev.close()


def test_sequence_numbers_continue_across_a_restart(make_config):
    cfg = make_config(max_frames=4)
    first_boot = run(cfg)
    second_boot = run(cfg)
    rows = seqs(cfg)
    assert [s for _, s in rows] == list(range(1, 9))  # 1-4, then 5-8: one number, one part
    assert {b for b, _ in rows[:4]} == {first_boot} and {b for b, _ in rows[4:]} == {second_boot} != {first_boot}


def test_sequence_numbers_continue_after_retention_deleted_every_record(make_config):
    cfg = make_config(max_frames=3, evidence={"retention_h": 1})
    run(cfg)
    from serving.alarms import Alarms
    from serving.evidence import EvidenceStore

    ev = EvidenceStore(cfg.evidence, Alarms(), cfg.station_id)
    ev.db.execute("UPDATE frames SET synced=1, wall_time=?", (time.time() - 7200,))  # synced and expired
    assert enforce_limits(ev)["expired"] == 3 and not ev.query(limit=10)
    ev.close()
    run(cfg)
    assert [s for _, s in seqs(cfg)] == [4, 5, 6]  # not 1, 2, 3 again
