"""End to end: real images -> station -> real Modbus server; pulses for exactly the defective parts."""

import shutil
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.engine import AnomalyEngine
from serving.images import list_images, read_image
from serving.station.runtime import Station
from services import coil_edges, plc_sim

pytestmark = [pytest.mark.services, pytest.mark.slow]
DELAY_MS, PULSE_MS = 120, 30


def mixed_stream(tmp_path, bundle_dir, test_images):
    """Alternate clear good and clear defective cells (as this bundle scores them) into one replay folder."""
    engine = AnomalyEngine.load(bundle_dir)
    thr = engine.thresholds.image
    scored = [(engine.infer(read_image(p)).score, p) for sub in ("good", "defect") for p in list_images(test_images / sub)]
    good = [p for s, p in sorted(scored) if "good" in p.parent.name and s < 0.9 * thr][:4]
    bad = [p for s, p in sorted(scored, reverse=True) if "defect" in p.parent.name and s > 1.1 * thr][:4]
    assert len(good) >= 3 and len(bad) >= 3, "test bundle cannot separate the test cells"
    stream = tmp_path / "stream"
    stream.mkdir()
    truth = {}
    for i, p in enumerate([x for pair in zip(good, bad) for x in pair], start=1):
        shutil.copy(p, stream / f"{i:03d}_{p.parent.name}.png")
        truth[i] = p.parent.name
    return stream, truth


def test_images_to_reject_pulses(tmp_path, bundle_dir, test_images, make_config):
    stream, truth = mixed_stream(tmp_path, bundle_dir, test_images)
    with plc_sim(tmp_path) as (port, edges):
        cfg = make_config(source={"path": str(stream), "rate_hz": 5}, gate={"min_area_px": 0, "deadline_ms": 110},
                          actuator={"kind": "modbus", "delay_ms": DELAY_MS, "pulse_ms": PULSE_MS,
                                    "modbus": {"port": port}})
        station = Station(cfg).start()
        assert station.wait(60)
        time.sleep(0.2)
        client = TestClient(create_app(station))
        token = client.post("/api/login", json={"username": "olga", "password": "op-pass"}).json()["token"]
        page = client.get("/api/state", headers={"Authorization": f"Bearer {token}"}).json()
        station.stop()
    records = {r.seq: r for r in station_records(cfg)}
    assert set(records) == set(truth)
    assert {s for s, r in records.items() if r.verdict == "FAIL"} == {s for s, t in truth.items() if t == "defect"}
    on_edges = [t for t, v in coil_edges(edges, 0) if v]
    assert len(on_edges) == sum(t == "defect" for t in truth.values())
    for seq in sorted(s for s, t in truth.items() if t == "defect"):
        expected = records[seq].t_trigger_ns + DELAY_MS * 1_000_000
        nearest = min(on_edges, key=lambda t: abs(t - expected))
        assert abs(nearest - expected) / 1e6 < 15, f"part {seq}: pulse {(nearest - expected) / 1e6:.1f} ms off"
    # result registers carry every part's sequence number and verdict code
    results = [e for e in read_edges(edges) if e["kind"] == "hr" and e["address"] == 0]
    assert [v["values"] for v in results] == [[s, 2 if truth[s] == "defect" else 1, 0, s] for s in sorted(truth)]
    for r in records.values():
        assert r.verdict == "PASS" or r.overlay_file
    n_bad = sum(t == "defect" for t in truth.values())
    assert page["counts"] == {"PASS": len(truth) - n_bad, "FAIL": n_bad} and page["frames"] == len(truth)
    assert page["actuation"]["pulses"] == n_bad and page["actuation"]["late"] == 0


def station_records(cfg):
    from serving.alarms import Alarms
    from serving.evidence import EvidenceStore

    ev = EvidenceStore(cfg.evidence, Alarms(), cfg.station_id)
    try:
        return ev.query(limit=1000, order="seq")
    finally:
        ev.close()


def read_edges(path):
    from serving.lineio.plcsim import read_edges as _read

    return _read(str(path))


def test_bad_frames_fail_safe_and_the_station_keeps_going(tmp_path, test_images, make_config, monkeypatch):
    stream = tmp_path / "bad"
    stream.mkdir()
    good = list_images(test_images / "good")
    shutil.copy(good[0], stream / "001.png")
    (stream / "002.png").write_bytes(b"\x89PNG corrupt")
    cv2.imwrite(str(stream / "003.png"), np.zeros((40, 40, 3), np.uint8))  # smaller than the ROI below
    shutil.copy(good[1], stream / "004.png")
    station = Station(make_config(source={"path": str(stream), "rate_hz": 20}, roi="0,0,290,290")).start()
    assert station.wait(30)
    recs = {r.seq: r for r in station_records(station.cfg)}
    station.stop()
    assert recs[2].rule == "fail_safe.corrupt_frame" and recs[2].verdict == "FAIL"
    assert recs[3].rule == "fail_safe.wrong_frame" and "outside the 40x40 image" in " ".join(recs[3].reasons)
    assert recs[1].rule.startswith("anomaly") and recs[4].rule.startswith("anomaly")


def test_engine_fault_fails_safe(tmp_path, test_images, make_config):
    station = Station(make_config(max_frames=3))

    def broken(batch):
        raise RuntimeError("CUDA error: device lost")

    station.engine.forward = broken
    station.start()
    assert station.wait(30)
    recs = station_records(station.cfg)
    station.stop()
    assert len(recs) == 3 and all(r.rule == "fail_safe.engine_error" and r.verdict == "FAIL" for r in recs)
    assert "device lost" in recs[0].reasons[0]


def test_frame_with_the_wrong_channel_count_fails_safe(make_config):
    from serving.lineio.frames import Frame

    station = Station(make_config(max_frames=1))
    frame = Frame(seq=1, t_trigger_ns=time.monotonic_ns(), t_capture_ns=time.monotonic_ns(),
                  image=np.zeros((300, 300, 2), np.uint8), name="cam0")
    rec = station.process(frame)
    assert (rec.verdict, rec.rule) == ("FAIL", "fail_safe.wrong_frame") and "HxWx3" in rec.reasons[0]
    gray = Frame(seq=2, t_trigger_ns=time.monotonic_ns(), t_capture_ns=time.monotonic_ns(),
                 image=np.zeros((300, 300), np.uint8), name="cam0")
    assert station.process(gray).rule.startswith("anomaly")  # grayscale is converted, not refused
    station.stop()


def test_plc_triggered_capture(tmp_path, make_config):
    with plc_sim(tmp_path, "--trigger-period-ms", "100") as (port, edges):
        cfg = make_config(max_frames=4, source={"trigger": "modbus", "trigger_poll_ms": 2},
                          actuator={"kind": "none", "modbus": {"port": port}})
        station = Station(cfg).start()
        assert station.wait(20)
        recs = station_records(cfg)
        station.stop()
    assert [r.seq for r in recs] == [1, 2, 3, 4]
    gaps = np.diff([r.t_trigger_ns for r in recs]) / 1e6
    # one capture per PLC trigger, 100 ms apart (the first may be a trigger already pending at start-up)
    assert np.all((gaps[1:] > 60) & (gaps[1:] < 160)) and gaps[0] < 160
    resets = [v for t, v in coil_edges(edges, 4) if v == 0]
    assert len(resets) >= 4  # the station resets the trigger coil after each capture


def test_slow_evidence_does_not_delay_the_next_parts_verdict(make_config, monkeypatch):
    """Each part's evidence takes 300 ms here (a slow disk, big frames); parts come every 100 ms. The verdict and
    the actuation command must not wait for the previous parts' evidence: on the inspection thread, part 5 would
    have waited for four parts' evidence (~1 s)."""
    from serving.station.records import PartView

    pngs = PartView.pngs

    def slow(self):
        time.sleep(0.3)
        return pngs(self)

    monkeypatch.setattr(PartView, "pngs", slow)
    station = Station(make_config(max_frames=5, source={"rate_hz": 10}, gate={"deadline_ms": 2000}))
    station.start()
    assert station.wait(30)
    recs = station_records(station.cfg)
    station.stop()
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5] and all(r.crop_file for r in recs)  # every part kept, in order
    totals = [r.latency_ms["total"] for r in recs]
    assert max(totals) < 250, totals  # trigger -> actuation command; ~600-1000 ms for the later parts before
