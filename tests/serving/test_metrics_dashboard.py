"""Every series the Grafana dashboard plots is one the station exports."""

import json
import re
from pathlib import Path

from serving.station.metrics import STAGES, StationMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana-dashboard.json"


def test_dashboard_queries_only_exported_series():
    m = StationMetrics()
    for stage in STAGES:
        m.observe_stage(stage, 0.01)
    m.verdicts.labels("FAIL", "anomaly").inc()
    m.actuation_event("late")
    m.alarm("plc", True)
    m.stability_component.labels("score").set(90)
    exported = set(re.findall(r"^(lineguard_\w+?)(?:_bucket|_count|_sum|_created|_total)?[{ ]",
                              m.render().decode(), flags=re.M))
    exported |= {e + "_total" for e in exported} | {e + "_bucket" for e in exported}
    queried = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for t in panel["targets"]:
            queried |= set(re.findall(r"lineguard_\w+", t["expr"]))
    assert queried and queried <= exported, queried - exported
    text = m.render().decode()
    assert all(f'stage="{stage}"' in text for stage in ("capture", "preprocess", "inference", "gate", "actuation"))
