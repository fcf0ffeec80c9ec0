"""The verdict is defined once: station, replay table and evaluation agree on every image."""

import os

import yaml

from flows.evaluation.evaluate import evaluate
from serving.config import load_config
from serving.evidence import EvidenceStore
from serving.station.replay import replay
from serving.station.runtime import Station


def test_station_replay_and_evaluate_give_the_same_verdict_for_every_image(tmp_path, bundle_dir, test_images, make_config):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(test_images, data / "test")
    from serving.engine import AnomalyEngine

    thr = AnomalyEngine.load(bundle_dir).thresholds
    # rules that make every rule of the gate matter: area, 2-of-3 persistence, an SOP score limit
    gate = {"min_area_px": 400, "persistence_n": 2, "persistence_m": 3,
            "sop": [{"name": "hard-limit", "action": "fail_above_score", "value": thr.image * 1.6}]}
    cfg = make_config(source={"path": str(data / "test"), "rate_hz": 25}, gate=gate)
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cfg = load_config(path)

    station = Station(cfg).start()
    assert station.wait(60)
    station.stop()
    ev = EvidenceStore(cfg.evidence, station.alarms, cfg.station_id)
    at_station = {r.source: (r.verdict, r.rule) for r in ev.query(limit=1000, order="seq")}

    rows = replay(bundle_dir, data / "test", rules=cfg.gate)
    in_replay = {str(r.path.relative_to(data / "test")): (r.verdict, r.rule) for r in rows}

    report = evaluate(bundle_dir, data, rules=cfg.gate, progress=False)
    in_eval = {os.path.relpath(v["file"], data / "test"): (v["verdict"], v["rule"]) for v in report["verdicts"]}

    assert len(at_station) == len(in_replay) == len(in_eval) == len(list(test_images.rglob("*.png")))
    assert at_station == in_replay == in_eval
    rules_seen = {rule for _, rule in at_station.values()}
    assert len(rules_seen) >= 3, rules_seen  # the comparison exercised more than the score threshold
