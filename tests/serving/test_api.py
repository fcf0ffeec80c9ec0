"""The operator API: auth and roles, review dispositions, audit, gate changes, bundle reloads, bad requests."""

import json

import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.station.audit_chain import verify_chain


@pytest.fixture()
def client(station):
    return TestClient(create_app(station))


def login(client, user, pw):
    r = client.post("/api/login", json={"username": user, "password": pw})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_nothing_that_changes_state_is_anonymous(client):
    assert client.get("/api/state").status_code == 401
    assert client.post("/api/review/1", json={"disposition": "defect"}).status_code == 401
    assert client.put("/api/gate", json={"min_area_px": 10}).status_code == 401
    assert client.post("/api/bundle", json={"path": "/x"}).status_code == 401
    assert client.post("/api/login", json={"username": "olga", "password": "wrong"}).status_code == 401
    assert client.get("/healthz").json()["ok"] is True
    assert b"lineguard_stage_latency_seconds" in client.get("/metrics").content


def test_state_counts_match_the_evidence_store(client, station):
    h = login(client, "olga", "op-pass")
    s = client.get("/api/state", headers=h).json()
    verdicts = [r.verdict for r in station.evidence.query(limit=1000)]
    counts = {v: verdicts.count(v) for v in set(verdicts)}
    assert s["counts"] == {"PASS": counts.get("PASS", 0), "FAIL": counts.get("FAIL", 0)}
    assert s["frames"] == sum(counts.values()) == 12
    assert s["last"]["verdict"] in ("PASS", "FAIL")


def test_review_disposition_is_stored_with_user_and_time_and_audited(client, station):
    h = login(client, "olga", "op-pass")
    items = client.get("/api/review", headers=h).json()["items"]
    assert 3 <= len(items) <= 5 and {i["kind"] for i in items} <= {"borderline", "novel"}
    png = client.get(f"/api/evidence/{items[0]['id']}/overlay.png", headers=h)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    r = client.post(f"/api/review/{items[0]['id']}", json={"disposition": "defect", "class_name": "crack"}, headers=h)
    assert r.status_code == 200
    rec = station.evidence.get(items[0]["id"])
    assert (rec.disposition, rec.disposition_class, rec.disposition_user) == ("defect", "crack", "olga")
    assert rec.disposition_time > 0
    entries = station.audit.entries()
    assert entries[-1]["action"] == "disposition" and entries[-1]["user"] == "olga"
    assert verify_chain(station.audit.path) is None


def test_audit_log_is_append_only_and_tamper_evident(client, station):
    h = login(client, "eddie", "eng-pass")
    client.put("/api/gate", json={"min_area_px": 5}, headers=h)
    client.put("/api/gate", json={"min_area_px": 6}, headers=h)
    lines = station.audit.path.read_text().splitlines()
    edited = json.loads(lines[0])
    edited["user"] = "mallory"
    station.audit.path.write_text("\n".join([json.dumps(edited, sort_keys=True), *lines[1:]]) + "\n")
    assert verify_chain(station.audit.path) == 1


def test_roles_gate_changes_and_malformed_requests(client, station):
    op, eng = login(client, "olga", "op-pass"), login(client, "eddie", "eng-pass")
    r = client.put("/api/gate", json={"min_area_px": 100}, headers=op)
    assert r.status_code == 403 and "engineer role" in r.json()["detail"]
    r = client.put("/api/gate", json={"min_area_px": 100, "persistence_n": 1}, headers=eng)
    assert r.status_code == 200 and station.rules.min_area_px == 100 and r.json()["min_area_px"] == 100
    assert station.audit.entries()[-1]["action"] == "gate_changed"
    r = client.put("/api/gate", json={"min_area": 1}, headers=eng)
    assert r.status_code == 422 and r.json()["detail"].startswith("min_area: unknown field; allowed: class_confidence, ")
    r = client.put("/api/gate", json={"persistence_n": 0}, headers=eng)
    assert r.json() == {"detail": "persistence_n: Input should be greater than or equal to 1 (got 0)"}
    r = client.put("/api/gate", json={"persistence_n": 4}, headers=eng)  # valid alone, not with persistence_m 1
    assert r.status_code == 422 and r.json()["detail"].startswith("persistence_n: persistence_n (4) cannot exceed")
    assert station.rules.persistence_n == 1  # refused changes change nothing
    r = client.put("/api/gate", json={"image_threshold": "NaN"}, headers=eng)
    assert r.status_code == 422 and r.json()["detail"].startswith("image_threshold: Input should be a finite number")
    r = client.post("/api/review/1", json={"disposition": "maybe"}, headers=op)
    assert r.json() == {"detail": "disposition: Input should be 'false_alarm' or 'defect' (got 'maybe')"}
    r = client.post("/api/review/1", content=b"{not json", headers={**op, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("1: JSON decode error")
    r = client.get("/api/evidence/abc/crop.png", headers=op)
    assert r.json() == {"detail": "rid: Input should be a valid integer, unable to parse string as an integer (got 'abc')"}
    assert client.post("/api/review/999999", json={"disposition": "defect"}, headers=op).status_code == 404
    assert client.get("/healthz").json()["ok"]  # still up


def test_every_route_needs_a_token_except_a_short_public_list(client):
    from serving.api.deps import PUBLIC

    assert len(PUBLIC) <= 6  # two pages (operator, setup), their assets, liveness, metrics, login
    routes = {(m.upper(), path) for path, ops in client.get("/openapi.json").json()["paths"].items() for m in ops}
    checked = 0
    for method, path in sorted(routes):
        r = client.request(method, path.replace("{rid}", "1").replace("{kind}", "crop"), json={})
        if (method, path) in PUBLIC:
            assert r.status_code != 401, (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code)
            checked += 1
    assert checked >= 10 and ("PUT", "/api/gate") in routes


def test_bad_bundle_is_refused_and_the_old_one_keeps_running(client, station, bundle_copy):
    eng = login(client, "eddie", "eng-pass")
    before = station.engine.bundle.manifest.bundle_version
    (bundle_copy / "model.onnx").write_bytes(b"tampered")
    r = client.post("/api/bundle", json={"path": str(bundle_copy)}, headers=eng)
    assert r.status_code == 409 and "sha256 does not match" in r.json()["detail"] and before in r.json()["detail"]
    assert station.engine.bundle.manifest.bundle_version == before
    assert station.alarms.is_active("bundle")
    assert station.audit.entries()[-1]["action"] == "bundle_refused"


def test_raising_persistence_at_run_time_lengthens_the_history(client, station):
    eng = login(client, "eddie", "eng-pass")
    r = client.put("/api/gate", json={"persistence_n": 3, "persistence_m": 5}, headers=eng)
    assert r.status_code == 200 and station.history.maxlen == 4


def test_pages_come_with_a_content_security_policy_and_no_framing(client):
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text  # no inline script for the policy to allow
    assert client.get("/static/operator.js").status_code == 200
    assert client.get("/static/../config.py").status_code == 404
    assert client.get("/static/operator.html").status_code == 404
