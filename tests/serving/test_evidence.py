"""The evidence buffer: encryption at rest, retention/quota order, sync, crash safety, bad keys and full disks."""

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from serving.alarms import Alarms
from serving.evidence.config import EvidenceConfig
from serving.evidence import EvidenceStore, InspectionRecord
from serving.evidence.crypto import generate_key
from serving.evidence.retention import enforce_limits
from serving.evidence.sync import sync_evidence

PNG = b"\x89PNG\r\n\x1a\n" + b"IHDR-plaintext-marker" * 200


def store(tmp_path, **kw):
    key = tmp_path / "k.key"
    if not key.exists() and kw.pop("make_key", True):
        generate_key(key)
    cfg = EvidenceConfig(dir=str(tmp_path / "ev"), key_file=str(key), **kw)
    alarms = Alarms()
    return EvidenceStore(cfg, alarms, "st1"), alarms


def rec(seq, verdict="FAIL", **kw):
    return InspectionRecord(**{"station_id": "st1", "seq": seq, "t_trigger_ns": 1000 + seq, "wall_time": time.time(),
                               "verdict": verdict, "rule": "anomaly", "score": 1.0, **kw})


def test_images_are_encrypted_at_rest_and_decrypt_intact(tmp_path):
    ev, _ = store(tmp_path)
    rid = ev.record(rec(1), PNG, PNG)
    files = list((tmp_path / "ev" / "images").iterdir())
    assert len(files) == 2
    for f in files:
        raw = f.read_bytes()
        assert b"\x89PNG" not in raw and b"plaintext-marker" not in raw
    assert ev.read_image(ev.get(rid).overlay_file) == PNG


def test_tampered_image_is_detected(tmp_path):
    ev, _ = store(tmp_path)
    rid = ev.record(rec(1), PNG, None)
    path = tmp_path / "ev" / "images" / ev.get(rid).crop_file
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception):  # cryptography's InvalidTag
        ev.read_image(path.name)


def test_quota_drops_synced_first_then_unsynced_pass_and_fail_last_with_an_alarm(tmp_path):
    ev, alarms = store(tmp_path, quota_mb=0.02)  # ~20 KB: room for about two records' images
    a = ev.record(rec(1, "FAIL"), PNG, PNG)
    b = ev.record(rec(2, "PASS"), PNG, PNG)
    ev.db.execute("UPDATE frames SET synced=1 WHERE id=?", (a,))
    c = ev.record(rec(3, "FAIL"), PNG, PNG)
    out = enforce_limits(ev)
    assert out["synced_images"] == 1 and ev.get(a).images_dropped is True
    assert ev.get(c).overlay_file  # unsynced FAIL survives while anything else can go
    for i in range(4, 10):
        ev.record(rec(i, "FAIL"), PNG, PNG)
    out = enforce_limits(ev)
    assert ev.get(b).images_dropped is True
    assert out["unsynced_fail_images"] > 0 and alarms.is_active("evidence_fail_dropped")
    assert ev.get(c).verdict == "FAIL"  # the record itself is never dropped unsynced


def test_retention_expires_only_synced_records(tmp_path):
    ev, alarms = store(tmp_path, retention_h=1)
    old_synced = ev.record(rec(1, wall_time=time.time() - 7200), PNG, None)
    old_unsynced = ev.record(rec(2, wall_time=time.time() - 7200), PNG, None)
    ev.db.execute("UPDATE frames SET synced=1 WHERE id=?", (old_synced,))
    assert enforce_limits(ev)["expired"] == 1
    assert ev.get(old_synced) is None and ev.get(old_unsynced) is not None
    assert alarms.is_active("evidence_unsynced_old")


def test_sync_copies_records_and_marks_them_and_reports_offline(tmp_path):
    ev, _ = store(tmp_path)
    ids = [ev.record(rec(i), PNG, PNG) for i in range(3)]
    with pytest.raises(ConnectionError, match="not reachable"):
        sync_evidence(ev, tmp_path / "no-such-mount" / "evidence")
    dest = tmp_path / "remote"
    dest.mkdir()
    assert sync_evidence(ev, f"file://{dest}") == 3
    objects = sorted((dest / "st1" / "records").rglob("*.json"))  # one object per record
    assert sorted(json.loads(f.read_text())["id"] for f in objects) == ids
    assert len(list((dest / "st1" / "images").iterdir())) == 6 and ev.unsynced() == 0
    assert len(list((dest / "st1" / "manifests").iterdir())) == 1  # one batch


def test_missing_key_keeps_records_without_images_and_alarms(tmp_path):
    ev, alarms = store(tmp_path, make_key=False)
    assert alarms.is_active("evidence_key") and "gen-key" in alarms.active()[0].message
    rid = ev.record(rec(1), PNG, PNG)
    assert ev.get(rid).verdict == "FAIL" and ev.get(rid).crop_file is None
    assert not list((tmp_path / "ev" / "images").iterdir())  # never stored in the clear


def test_full_disk_keeps_the_record_and_alarms(tmp_path, monkeypatch):
    ev, alarms = store(tmp_path)

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ev.vault, "write", full)
    rid = ev.record(rec(1), PNG, PNG)
    assert rid is not None and ev.get(rid).crop_file is None and ev.get(rid).images_dropped
    assert alarms.is_active("evidence_disk") and "No space left" in alarms.active()[0].message


WRITER = """
import sys, time
from serving.alarms import Alarms
from serving.evidence.config import EvidenceConfig
from serving.evidence import EvidenceStore, InspectionRecord
ev = EvidenceStore(EvidenceConfig(dir=sys.argv[1], key_file=sys.argv[2]), Alarms(), "st1")
png = b"\\x89PNG" + bytes(range(256)) * 400
i = 0
while True:
    i += 1
    ev.record(InspectionRecord(station_id="st1", seq=i, t_trigger_ns=i, wall_time=time.time(), verdict="FAIL",
                               rule="anomaly", score=float(i)), png, png)
    if i == 20:
        print("writing", flush=True)
"""


def test_kill_9_mid_write_leaves_every_committed_record_intact(tmp_path):
    key = generate_key(tmp_path / "k.key")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "ev"), str(key)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ev = EvidenceStore(EvidenceConfig(dir=str(tmp_path / "ev"), key_file=str(key)), Alarms(), "st1")
    rows = ev.query(limit=100_000, order="id")
    assert len(rows) >= 20
    for r in rows:
        for f in (r.crop_file, r.overlay_file):
            assert ev.read_image(f).startswith(b"\x89PNG")  # authenticated: complete and unaltered
    assert not list((tmp_path / "ev" / "images").glob("*.tmp"))  # swept at start-up
    assert sqlite3.connect(tmp_path / "ev" / "evidence.db").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_record_the_database_refuses_is_queued_counted_alarmed_and_written_later(tmp_path):
    ev, alarms = store(tmp_path)
    ev.record(rec(1))
    ev.db.execute("ALTER TABLE frames RENAME TO frames_away")  # the table is gone: every insert fails
    assert ev.record(rec(2), PNG, PNG) is None and ev.record(rec(3)) is None
    assert ev.write_failures == 1 and len(ev.pending) == 2  # the second never reached the database: kept in order
    assert alarms.is_active("evidence_db") and "2 records queued" in alarms.active()[-1].message
    assert (tmp_path / "ev" / "pending.jsonl").read_text().count("\n") == 2  # on disk too, for a restart
    ev.db.execute("ALTER TABLE frames_away RENAME TO frames")
    assert ev.flush_pending() == 2 and not alarms.is_active("evidence_db")
    rows = ev.query(limit=10, order="id")
    assert [r.seq for r in rows] == [1, 2, 3] and rows[1].crop_file and ev.read_image(rows[1].crop_file) == PNG
    assert not (tmp_path / "ev" / "pending.jsonl").exists()


def test_queued_records_survive_a_restart(tmp_path):
    ev, _ = store(tmp_path)
    ev.db.execute("ALTER TABLE frames RENAME TO frames_away")
    ev.record(rec(7), PNG, None)
    ev.db.execute("ALTER TABLE frames_away RENAME TO frames")
    ev.close()  # the station dies before it could retry
    ev2, alarms = store(tmp_path)
    (r,) = ev2.query(limit=10)
    assert r.seq == 7 and ev2.read_image(r.crop_file) == PNG and not alarms.is_active("evidence_db")


def test_a_pulse_that_ends_before_its_record_is_stored_still_reaches_it(tmp_path):
    """The after-part thread stores a part's record while its reject pulse may already have run: the pulse's
    outcome waits for the record instead of being dropped."""
    from serving.evidence.record import ActuationOutcome
    from serving.lineio.actuation.pulses import PulseReport
    from serving.station.records import PulseRecorder

    ev, _ = store(tmp_path)
    pulses = PulseRecorder(ev, "boot1")
    pulses.report(PulseReport(seq=7, start_error_ms=0.4, width_ms=30.2))
    pulses.flush()  # no record 7 yet
    ev.record(rec(7, boot_id="boot1", actuation=ActuationOutcome(scheduled=True)))
    pulses.flush()
    (r,) = ev.query("seq=7", limit=1)
    assert r.actuation.pulse_ok is True and r.actuation.width_ms == 30.2
    pulses.report(PulseReport(seq=8, start_error_ms=None, width_ms=None, missed=True))
    pulses.WAIT_FOR_RECORD_S = 0.0  # a record that never comes: the outcome is not kept for ever
    pulses.flush()
    assert not pulses._reports
    ev.close()
