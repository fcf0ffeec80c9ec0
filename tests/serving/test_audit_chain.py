"""The audit trail is keyed: truncating it, editing an entry and recomputing the plain hash chain, or deleting
its head are all found, at start (the station refuses to start) and when /api/audit is read."""

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from api_station import write_config
from serving.api import create_app
from serving.station.audit import AuditLog, AuditTampered
from serving.station.audit_chain import verify_chain
from serving.station.runtime import Station


def filled(tmp_path, n=5) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append("eddie", "gate_changed", {"min_area_px": i})
    return log


def rechain(lines: list[str]) -> list[str]:
    """What a forger without the key does after editing an entry: recompute every plain sha256 link."""
    out, prev = [], "0" * 64
    for line in lines:
        entry = json.loads(line)
        entry["prev"] = prev
        text = json.dumps(entry, sort_keys=True)
        out.append(text)
        prev = hashlib.sha256(text.encode()).hexdigest()
    return out


def test_the_key_is_made_private_on_first_start_and_kept_apart_from_the_log(tmp_path):
    log = filled(tmp_path, 2)
    assert stat.S_IMODE(os.stat(log.key_file).st_mode) == 0o600
    assert log.key_file != log.path and log.head_file.exists()
    entries = log.entries()
    assert [e["i"] for e in entries] == [0, 1] and all(len(e["mac"]) == 64 for e in entries)
    assert log.verify().ok and AuditLog(log.path).verify().ok  # a restart on an intact log
    os.chmod(log.key_file, 0o644)
    with pytest.raises(AuditTampered, match="readable by others.*chmod 600"):
        AuditLog(log.path)


def test_a_truncated_log_is_found(tmp_path):
    log = filled(tmp_path)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:3]) + "\n")
    assert verify_chain(log.path) is None  # the plain chain cannot see it
    check = log.verify()
    assert not check.ok and "3 entries but its head says 5" in check.problem
    with pytest.raises(AuditTampered, match="entries were removed from its end"):
        AuditLog(log.path)


def test_an_edited_entry_with_its_plain_chain_recomputed_is_found(tmp_path):
    log = filled(tmp_path)
    lines = log.path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["user"] = "mallory"
    lines[1] = json.dumps(edited, sort_keys=True)
    log.path.write_text("\n".join(rechain(lines)) + "\n")
    assert verify_chain(log.path) is None
    assert "entry 1 was changed" in log.verify().problem
    with pytest.raises(AuditTampered, match="entry 1 was changed"):
        AuditLog(log.path)


def test_a_deleted_or_forged_head_is_found(tmp_path):
    log = filled(tmp_path)
    head = log.head_file.read_text()
    log.head_file.unlink()
    assert "head" in log.verify().problem and "missing" in log.verify().problem
    with pytest.raises(AuditTampered, match="missing"):
        AuditLog(log.path)
    # truncate and write a head that names the new last entry: the seal needs the key
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:2]) + "\n")
    forged = {**json.loads(head), "entries": 2, "mac": json.loads(lines[1])["mac"]}
    log.head_file.write_text(json.dumps(forged))
    with pytest.raises(AuditTampered, match="head .* was altered"):
        AuditLog(log.path)
    # the key gone while the head stays: nothing can verify the log
    log.head_file.write_text(head)
    log.key_file.unlink()
    with pytest.raises(AuditTampered, match="key .* is missing"):
        AuditLog(log.path)


def test_a_torn_last_line_from_a_power_cut_is_set_aside_and_audited(tmp_path):
    log = filled(tmp_path, 3)
    with open(log.path, "a") as fh:
        fh.write('{"action": "disposi')  # the write the power cut interrupted: never acknowledged
    again = AuditLog(log.path)
    assert again.verify().ok
    entries = again.entries()
    assert len(entries) == 4 and entries[-1]["action"] == "audit_torn_entry_set_aside"
    assert open(entries[-1]["details"]["file"]).read() == '{"action": "disposi'


def test_a_log_written_before_keys_is_checked_and_sealed(tmp_path):
    path, prev, lines = tmp_path / "audit.jsonl", "0" * 64, []
    for i in range(3):  # the previous format: a plain sha256 chain, no key
        line = json.dumps({"time": i, "user": "olga", "action": "disposition", "details": {}, "prev": prev},
                          sort_keys=True)
        lines.append(line)
        prev = hashlib.sha256(line.encode()).hexdigest()
    path.write_text("\n".join(lines) + "\n")
    log = AuditLog(path)
    assert log.verify().ok and log.entries()[-1]["action"] == "audit_keyed"
    # the old entries are covered now: editing one breaks the first keyed entry's link
    edited = json.loads(lines[0])
    edited["user"] = "mallory"
    path.write_text("\n".join([json.dumps(edited, sort_keys=True), *path.read_text().splitlines()[1:]]) + "\n")
    assert not log.verify().ok


def test_numbers_json_cannot_hold_are_written_as_words_not_null(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("eddie", "test", {"x": float("nan"), "y": [float("inf")]})
    assert log.entries()[-1]["details"] == {"x": "nan", "y": ["inf"]} and log.verify().ok


def test_the_station_refuses_to_start_on_a_tampered_log_and_the_api_says_so(tmp_path, make_config):
    cfg = make_config(max_frames=2)
    st = Station(cfg).start()
    assert st.wait(30)
    client = TestClient(create_app(st))
    token = client.post("/api/login", json={"username": "eddie", "password": "eng-pass"}).json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    assert client.put("/api/gate", json={"min_area_px": 5}, headers=h).status_code == 200
    view = client.get("/api/audit", headers=h).json()
    assert view["verified"] is True and view["problem"] is None and view["entries"][-1]["action"] == "gate_changed"
    path = st.audit.path
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # the last entry removed while the station runs
    view = client.get("/api/audit", headers=h).json()
    assert view["verified"] is False and "removed from its end" in view["problem"]
    assert any(a.name == "audit" for a in st.alarms.active())
    st.stop()
    with pytest.raises(AuditTampered, match="does not start on a tampered log"):
        Station(make_config(max_frames=2))
    # the command line: one clear line, exit 2, before any part is inspected
    out = subprocess.run([sys.executable, "-m", "serving.cli", "run", "--config", str(write_config(tmp_path, cfg)),
                          "--no-api"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "does not verify" in out.stderr and "Traceback" not in out.stderr
