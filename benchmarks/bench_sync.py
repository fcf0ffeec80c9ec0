"""Evidence sync through a long network cut: records produced vs records in the bucket, duplicates, lost.

Everything real on 127.0.0.1: moto's S3 API server (a process), a TCP relay process between the station
and it (stopped = the link is cut), and the station's own evidence store and housekeeper thread syncing
to ``s3://``. Hours of parts are simulated by rate and clock: parts are recorded as fast as the store
takes them, their wall times spread over ``--hours`` (one every ``--every`` seconds, 2 % FAIL and 5 % of
PASS with two images each), all while the link is down. Then the link comes back, and is cut again for
a moment ``--blips`` times while the backlog drains (batches interrupted mid-way).

    .venv/bin/python benchmarks/bench_sync.py [--hours 24] [--every 4] [--image-kb 30] [--blips 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from services import Relay, s3_server  # noqa: E402

from serving.alarms import Alarms  # noqa: E402
from serving.evidence import EvidenceConfig, EvidenceStore, InspectionRecord  # noqa: E402
from serving.evidence.crypto import generate_key  # noqa: E402
from serving.evidence.target import open_target  # noqa: E402
from serving.station.housekeeping import Housekeeper  # noqa: E402
from serving.station.metrics import StationMetrics  # noqa: E402


def wait_for(cond, timeout: float) -> float:
    """Seconds until ``cond()`` holds (raises after ``timeout``)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)
    return time.monotonic() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated time the link is down")
    ap.add_argument("--every", type=float, default=4.0, help="seconds between parts on the simulated clock")
    ap.add_argument("--image-kb", type=int, default=30, help="size of each kept image")
    ap.add_argument("--blips", type=int, default=3, help="short cuts while the backlog drains")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    secret = tmp / "s3.secret"
    secret.write_text("moto-takes-any-secret\n")
    secret.chmod(0o600)
    n = int(args.hours * 3600 / args.every)
    with s3_server(tmp) as s3, Relay(s3.port, tmp / "relay.log") as relay:
        cfg = EvidenceConfig(dir=str(tmp / "ev"), key_file=str(generate_key(tmp / "k.key")), quota_mb=4096,
                             retention_h=max(48.0, 2 * args.hours), sync_url="s3://evidence/plant",
                             sync_endpoint=f"http://127.0.0.1:{relay.port}", sync_key_id="bench",
                             sync_secret_file=str(secret), sync_interval_s=0.5, sync_timeout_s=2)
        alarms = Alarms()
        ev = EvidenceStore(cfg, alarms, "st1")
        hk = Housekeeper(ev, cfg, alarms, StationMetrics()).start()
        wait_for(lambda: hk.online, 30)
        relay.cut()
        t_cut = time.monotonic()
        offline_after = wait_for(lambda: not hk.online, 60)
        img = args.image_kb * 1024
        t0 = time.time() - args.hours * 3600
        t = time.monotonic()
        for i in range(1, n + 1):
            fail, sampled = i % 50 == 0, i % 20 == 0
            imgs = (os.urandom(img), os.urandom(img)) if fail or sampled else (None, None)
            ev.record(InspectionRecord(station_id="st1", boot_id="bench", seq=i, t_trigger_ns=i,
                                       wall_time=t0 + (i - 1) * args.every, verdict="FAIL" if fail else "PASS",
                                       rule="anomaly", score=0.1), *imgs)
        produce_s = time.monotonic() - t
        wait_for(lambda: hk.status().backlog_records == n, 60)
        peak = hk.status()
        offline_alarm = alarms.is_active("offline")
        down_s = time.monotonic() - t_cut
        relay.restore()
        t_back = time.monotonic()
        online_after = wait_for(lambda: hk.online, 120)
        blips = 0
        while blips < args.blips and hk.status().backlog_records > 0:  # cut mid-drain: batches interrupted
            time.sleep(1.5)
            relay.cut()
            time.sleep(2.0)
            relay.restore()
            blips += 1
        wait_for(lambda: ev.unsynced() == 0 and hk.status().backlog_records == 0, 3600)
        drain_s = time.monotonic() - t_back
        hk.stop()
        direct = open_target(cfg.model_copy(update={"sync_endpoint": s3.endpoint}))
        keys = direct.keys("st1/records")
        recs = [json.loads(direct.get(k)) for k in keys]
        parts = Counter((r["boot_id"], r["seq"]) for r in recs)
        manifests = direct.keys("st1/manifests")
        listed = {e["key"] for m in manifests for e in json.loads(direct.get(m))["records"]}
        images = direct.keys("st1/images")
        expected_images = sum(2 for i in range(1, n + 1) if i % 50 == 0 or i % 20 == 0)
        out = {
            "simulated_hours": args.hours, "records_produced": n, "records_in_bucket": len(recs),
            "duplicated": sum(c - 1 for c in parts.values()),
            "lost": len({("bench", i) for i in range(1, n + 1)} - set(parts)),
            "images_produced": expected_images, "images_in_bucket": len(images),
            "manifests": len(manifests), "records_listed_in_manifests": len(listed & set(keys)),
            "offline_detected_s": round(offline_after, 2), "offline_alarm": offline_alarm,
            "link_down_s": round(down_s, 1), "produce_s": round(produce_s, 1),
            "backlog_records_peak": peak.backlog_records, "backlog_mb_peak": round(peak.backlog_bytes / 2**20, 1),
            "oldest_unsynced_age_h": round((peak.oldest_unsynced_age_s or 0) / 3600, 2),
            "online_again_s": round(online_after, 2), "blips_while_draining": blips, "drain_s": round(drain_s, 1),
            "drain_records_per_s": round(n / drain_s, 1),
        }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:32s} {v}")
    return out


if __name__ == "__main__":
    main()
