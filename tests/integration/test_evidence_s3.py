"""Evidence to an S3 API: a real moto server process on 127.0.0.1 (started and stopped by PID), a real station.

- the station's housekeeper syncs to ``s3://`` and the page's ``sync`` state says so;
- a sync killed (SIGKILL) in the middle of its batches and run again leaves each record exactly once;
- a long stream recorded while the link is cut (a relay process stopped), then the link back: 0 lost,
  0 duplicated, and quota pressure meanwhile drops the right images;
- a server that hangs (SIGSTOP) is offline within the sync deadline, not forever.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from services import Relay, s3_server

from serving.alarms import Alarms
from serving.evidence import EvidenceStore, InspectionRecord
from serving.evidence.crypto import ImageVault, load_key
from serving.evidence.record import IMAGE_FIELDS
from serving.evidence.retention import enforce_limits
from serving.evidence.target import open_target
from serving.station.runtime import Station

pytestmark = [pytest.mark.slow, pytest.mark.services]
pytest.importorskip("moto")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture()
def secret(tmp_path):
    path = tmp_path / "s3.secret"
    path.write_text("moto-takes-any-secret\n")
    path.chmod(0o600)
    return path


def s3_evidence(endpoint: str, prefix: str, secret, **more) -> dict:
    return {"sync_url": f"s3://evidence/{prefix}", "sync_endpoint": endpoint, "sync_key_id": "lineguard-test",
            "sync_secret_file": str(secret), "sync_interval_s": 0.3, "sync_timeout_s": 2, **more}


def bucket_records(cfg, endpoint: str) -> list[dict]:
    """Every record object a station's target holds (read back through a fresh client, straight from the server)."""
    target = open_target(cfg.evidence.model_copy(update={"sync_endpoint": endpoint}))
    return [json.loads(target.get(k)) for k in target.keys(f"{cfg.station_id}/records")]


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_station_syncs_to_s3_through_its_housekeeper_and_the_page_shows_it(s3, secret, make_config):
    from serving.api import create_app

    cfg = make_config(evidence=s3_evidence(s3.endpoint, "e2e", secret))
    st = Station(cfg).start()
    try:
        assert st.wait(30)
        done = time.time()
        wait_for(lambda: st.evidence.unsynced() == 0 and (st.housekeeper.status().last_sync_at or 0) > done + 0.5,
                 60, "backlog not drained")
        client = TestClient(create_app(st))
        r = client.post("/api/login", json={"username": "olga", "password": "op-pass"})
        sync = client.get("/api/state", headers={"Authorization": f"Bearer {r.json()['token']}"}).json()["sync"]
        local = st.evidence.query(limit=1000, order="id")
    finally:
        st.stop()
    assert sync["target"] == "s3://evidence/e2e" and sync["online"] is True
    assert sync["backlog_records"] == 0 and sync["backlog_bytes"] == 0 and sync["oldest_unsynced_age_s"] is None
    assert time.time() - sync["last_sync_at"] < 60
    assert "moto-takes-any-secret" not in json.dumps(sync)
    target = open_target(cfg.evidence)
    recs = bucket_records(cfg, s3.endpoint)
    assert sorted(r["seq"] for r in recs) == [r.seq for r in local] and len(recs) == 12
    images = target.keys("test-line/images")
    assert len(images) == sum(bool(getattr(r, f)) for r in local for f in IMAGE_FIELDS) > 0
    name = images[0].rsplit("/", 1)[1]  # encrypted in the bucket, readable with the station's key
    png = ImageVault(load_key(cfg.evidence.key_file), "test-line", st.evidence.img_dir).decrypt(name, target.get(images[0]))
    assert png.startswith(b"\x89PNG")
    assert target.keys("test-line/manifests")


def test_the_pipeline_reads_the_records_from_the_bucket(s3, secret, make_config, monkeypatch):
    pytest.importorskip("pandas")
    from flows.data.evidence import load_records

    cfg = make_config(max_frames=5, evidence=s3_evidence(s3.endpoint, "pipeline", secret))
    st = Station(cfg).start()
    assert st.wait(30)
    wait_for(lambda: st.evidence.unsynced() == 0, 60, "not synced")
    st.stop()
    monkeypatch.setenv("LINEGUARD_S3_ENDPOINT", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "lineguard-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto-takes-any-secret")
    df = load_records("s3://evidence/pipeline")
    assert sorted(df["seq"]) == [1, 2, 3, 4, 5] and set(df["station_id"]) == {"test-line"}


SYNCER = """
import sys
from serving.alarms import Alarms
from serving.evidence import EvidenceConfig, EvidenceStore
from serving.evidence.sync import sync_evidence
cfg = EvidenceConfig.model_validate_json(sys.argv[1])
ev = EvidenceStore(cfg, Alarms(), "st1")
print("syncing", flush=True)
while sync_evidence(ev, batch=20):
    pass
"""


def fill(ev: EvidenceStore, n: int, start: float, step: float, seq0: int = 1, boot: str = "b1") -> list[int]:
    """``n`` parts, one every ``step`` seconds of wall time from ``start``: 2 % FAIL with images, 5 % of PASS with."""
    ids = []
    for i in range(seq0, seq0 + n):
        fail, sampled = i % 50 == 0, i % 20 == 0
        imgs = (os.urandom(2000), os.urandom(2000)) if fail or sampled else (None, None)
        ids.append(ev.record(InspectionRecord(station_id="st1", boot_id=boot, seq=i, t_trigger_ns=i,
                                              wall_time=start + (i - seq0) * step, verdict="FAIL" if fail else "PASS",
                                              rule="anomaly", score=0.1), *imgs))
    return ids


def test_a_sync_killed_mid_batch_and_run_again_leaves_each_record_once(s3, secret, tmp_path):
    from serving.evidence.config import EvidenceConfig
    from serving.evidence.crypto import generate_key
    from serving.evidence.sync import sync_evidence

    key = generate_key(tmp_path / "k.key")
    cfg = EvidenceConfig(dir=str(tmp_path / "ev"), key_file=str(key), **s3_evidence(s3.endpoint, "killed", secret))
    ev = EvidenceStore(cfg, Alarms(), "st1")
    fill(ev, 600, time.time() - 600, 1.0)
    target = open_target(cfg)
    proc = subprocess.Popen([sys.executable, "-c", SYNCER, cfg.model_dump_json()], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"syncing"
    wait_for(lambda: len(target.keys("st1/records")) >= 100, 60, "the syncer uploaded nothing")
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: some batches marked, one in flight
    proc.wait()
    before = len(target.keys("st1/records"))
    assert 100 <= before < 600
    while sync_evidence(ev):
        pass
    keys = target.keys("st1/records")
    parts = Counter((r["boot_id"], r["seq"]) for r in (json.loads(target.get(k)) for k in keys))
    assert len(keys) == 600 and len(parts) == 600 and max(parts.values()) == 1  # 0 lost, 0 duplicated
    assert ev.unsynced() == 0


def test_a_long_stream_through_a_network_cut_arrives_whole(s3, secret, make_config, tmp_path):
    """Six hours of parts (one per 10 s: 2,160) recorded while the link is down, then the link is back."""
    relay = Relay(s3.port, tmp_path / "relay.log").restore()
    hours, step = 6, 10.0
    n = int(hours * 3600 / step)
    cfg = make_config(max_frames=1, evidence={**s3_evidence(f"http://127.0.0.1:{relay.port}", "cut", secret),
                                              "quota_mb": 0.25})  # FAIL images fit, sampled PASS ones do not
    st = Station(cfg).start()
    try:
        assert st.wait(30)
        wait_for(lambda: st.housekeeper.online and st.housekeeper.status().backlog_records == 0, 30, "first sync")
        relay.cut()
        t0 = time.time() - hours * 3600
        ids = fill(st.evidence, n, t0, step, seq0=1000, boot=st.boot_id)  # the simulated clock: 6 h ago to now
        produced = len(ids) + 1  # and the replayed part
        wait_for(lambda: not st.housekeeper.online and st.housekeeper.status().backlog_records == len(ids), 30,
                 "offline not noticed")
        assert st.alarms.is_active("offline")
        status = st.housekeeper.status()
        assert status.oldest_unsynced_age_s == pytest.approx(hours * 3600, rel=0.01)
        # quota pressure while offline: the synced part's images and unsynced PASS images went, FAIL images stay
        enforce_limits(st.evidence)
        rows = st.evidence.query(limit=100_000, order="id")
        (replayed,) = [r for r in rows if r.seq < 1000]
        offline = [r for r in rows if r.seq >= 1000]
        assert replayed.images_dropped or not replayed.image_bytes  # synced: its images go first
        assert sum(r.images_dropped for r in offline if r.verdict == "PASS") > 50
        assert not any(r.images_dropped for r in offline if r.verdict == "FAIL")
        assert not st.alarms.is_active("evidence_fail_dropped")
        relay.restore()
        wait_for(lambda: st.evidence.unsynced() == 0 and st.housekeeper.status().backlog_records == 0, 240,
                 "backlog not drained after the cut")
        assert st.housekeeper.online and not st.alarms.is_active("offline")
    finally:
        st.stop()
        relay.cut()
    recs = bucket_records(cfg, s3.endpoint)
    parts = Counter((r["boot_id"], r["seq"]) for r in recs)
    local = {(st.boot_id, s) for s in range(1000, 1000 + n)}
    lost = local - set(parts)
    duplicated = sum(c - 1 for c in parts.values())
    print(f"network cut: produced {produced}, in bucket {len(recs)}, duplicated {duplicated}, lost {len(lost)}")
    assert len(recs) == produced and not lost and duplicated == 0


def test_a_server_that_hangs_is_offline_within_the_deadline_and_syncs_when_it_moves_again(secret, tmp_path):
    from serving.evidence.config import EvidenceConfig
    from serving.evidence.crypto import generate_key
    from serving.station.housekeeping import Housekeeper
    from serving.station.metrics import StationMetrics

    with s3_server(tmp_path / "frozen") as server:
        key = generate_key(tmp_path / "k.key")
        cfg = EvidenceConfig(dir=str(tmp_path / "ev"), key_file=str(key), **s3_evidence(server.endpoint, "h", secret))
        alarms = Alarms()
        ev = EvidenceStore(cfg, alarms, "st1")
        hk = Housekeeper(ev, cfg, alarms, StationMetrics())
        fill(ev, 40, time.time() - 40, 1.0)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        try:
            t = time.monotonic()
            assert hk.sync_now() == 0
            took = time.monotonic() - t
        finally:
            os.killpg(server.proc.pid, signal.SIGCONT)
        assert took < 3 * cfg.sync_timeout_s + 5 and not hk.online and alarms.is_active("offline")
        assert hk.sync_now() == 40 and hk.online and ev.unsynced() == 0
        assert len(open_target(cfg).keys("st1/records")) == 40


def test_endpoint_and_credentials_can_come_from_the_aws_environment(s3, tmp_path, monkeypatch):
    from serving.evidence.config import EvidenceConfig
    from serving.evidence.crypto import generate_key
    from serving.evidence.sync import sync_evidence

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    cfg = EvidenceConfig(dir=str(tmp_path / "ev"), key_file=str(generate_key(tmp_path / "k.key")),
                         sync_url="s3://evidence/env")  # no endpoint, no key in the config
    ev = EvidenceStore(cfg, Alarms(), "st1")
    fill(ev, 5, time.time() - 5, 1.0)
    assert sync_evidence(ev) == 5
    assert len(open_target(cfg).keys("st1/records")) == 5
