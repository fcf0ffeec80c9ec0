"""The hybrid loop end to end on MVTec AD bottle: station replay -> operator review (API) -> Label Studio (real
server) -> labeler corrections -> pull -> retrain at 20+ -> export -> deploy the detector -> the station names the
class of a held-out defect it never saw."""

import json

import pytest

from flows.params import load_params
from helpers import ROOT, require_bottle
from services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.services]
#: CI-sized training (about 5 min); the benchmark and `lineguard loop demo` train with the product's full settings
FAST = {"tracking.enabled": False, "model.input_size": 128, "detector.epochs": 8, "detector.synthetic_per_good": 1,
        "detector.max_goods": 100}


def test_the_loop_names_the_class_of_a_held_out_defect(tmp_path, monkeypatch):
    bottle = require_bottle()
    monkeypatch.setenv("LINEGUARD_LABEL_STUDIO_VENV", str(ROOT / ".venv-labelstudio"))
    monkeypatch.setenv("LINEGUARD_HOME", str(tmp_path))
    from flows.orchestration.loop_run import HELD_OUT, run_loop, summary_lines

    params = load_params(ROOT / "params.yaml", FAST, ROOT / "products" / "bottle.yaml")
    r = run_loop(tmp_path, params, bottle=bottle, port_ls=free_port(), port_api=free_port())
    print("\n".join(summary_lines(r)))
    (tmp_path / "loop.json").write_text(json.dumps(r, default=str))
    assert set(r["steps"]) == {"enroll", "station", "review", "push", "label", "pull", "retrain", "deploy", "check"}
    assert r["reviewed"] == r["pushed"] == r["pulled"] == 63 - sum(HELD_OUT.values())
    assert not r["push_problems"]
    due = [c for c, v in r["status"].items() if v["retrain"]]
    assert due and all(r["status"][c]["examples"] >= 20 for c in due)  # retraining was triggered by 20+
    assert r["detector"]["n_val"] > 0 and r["detector"]["map50"] > 0
    named = [k for k, v in r["named"].items() if v["class"] == r["truth"][k]]
    assert named, f"no held-out defect named by its class: {r['named']}"
    assert all(v["verdict"] == "FAIL" for v in r["named"].values())
