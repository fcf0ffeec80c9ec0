"""Deploys through the registry to real station processes: a real MLflow server, two stations on 127.0.0.1.

Deploy one version to both, a broken (but signed) version refused by both while the old one keeps
running, a rollback that restores exactly the previous version, and `lineguard fleet status`.
"""

import contextlib
import json
import os
import subprocess
import sys

import httpx
import pytest
import yaml

from flows.cli import main as lineguard
from flows.tracking.mlflow_runs import client, register_bundle
from helpers import fast_params, new_version
from serving.engine.bundle import MANIFEST, load_bundle
from services import free_port, mlflow_server, stop, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.services]


@contextlib.contextmanager
def station_process(tmp, make_config, station_id):
    port = free_port()
    cfg = make_config(station_id=station_id, source={"kind": "replay", "rate_hz": 4})
    data = cfg.model_dump(mode="json")
    path = tmp / f"{station_id}.yaml"
    path.write_text(yaml.safe_dump(data))
    log = tmp / f"{station_id}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "run", "--config", str(path)], stdout=fh,
                                stderr=subprocess.STDOUT, env={**os.environ, "LINEGUARD_API_PORT": str(port)},
                                start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def running(url):
    with httpx.Client(base_url=url) as c:
        tok = c.post("/api/login", json={"username": "eddie", "password": "eng-pass"}).json()["token"]
        b = c.get("/api/bundle", headers={"Authorization": f"Bearer {tok}"}).json()
        s = c.get("/api/state", headers={"Authorization": f"Bearer {tok}"}).json()
    return b, s


def test_deploy_refuse_rollback_and_fleet_status(tmp_path, make_config, bundle_dir, monkeypatch, capsys):
    monkeypatch.setenv("LINEGUARD_STATION_PASSWORD", "eng-pass")
    with mlflow_server(tmp_path / "mlflow") as uri, \
            station_process(tmp_path, make_config, "line-a") as a, station_process(tmp_path, make_config, "line-b") as b:
        params = fast_params()
        params = params.model_copy(update={"product": "fleet", "tracking": params.tracking.model_copy(
            update={"enabled": True, "uri": uri})})
        c = client(params.tracking)
        exp = c.get_experiment_by_name(params.tracking.experiment).experiment_id
        versions = {}
        for name, bundle in (("v1", bundle_dir), ("v2", new_version(bundle_dir, tmp_path / "v2", hours=1)),
                             ("broken", new_version(bundle_dir, tmp_path / "broken", hours=2, threshold_factor=0.5))):
            run = c.create_run(exp, run_name=f"fleet-{name}").info.run_id
            versions[name] = register_bundle(bundle, run, params)
        v1 = load_bundle(bundle_dir).manifest.bundle_version
        v2 = load_bundle(tmp_path / "v2").manifest.bundle_version
        cli = ["--station", a, "--station", b, "--user", "eddie", "--json", f"tracking.uri={uri}",
               "tracking.enabled=true", "product=fleet"]

        # 1. version 2 to both stations
        assert lineguard(["deploy", "--model", f"lineguard-fleet/{versions['v2']}", *cli]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [o["ok"] for o in out] == [True, True] and {o["station_id"] for o in out} == {"line-a", "line-b"}
        for url in (a, b):
            bundle, state = running(url)
            assert state["bundle_version"] == v2 and state["bundle_signer"] == "pipeline"
            assert bundle["history"]["anomaly"] == [v1, v2]
        mv2 = c.get_model_version("lineguard-fleet", versions["v2"])
        assert {"deployed.line-a", "deployed.line-b"} <= set(mv2.tags)  # which stations run it, since when
        assert json.loads(mv2.tags["deployed.line-a"])["since"]
        for tag in ("dataset_hash", "model_sha256", "threshold_config", "parent_version", "git_commit"):
            assert tag in mv2.tags

        # 2. a broken version: refused by both, v2 keeps running, the registry does not move
        assert lineguard(["deploy", "--model", f"lineguard-fleet/{versions['broken']}", *cli]) == 1
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [o["ok"] for o in out] == [False, False] and all("smoke test failed" in o["detail"] for o in out)
        for url in (a, b):
            assert running(url)[1]["bundle_version"] == v2
        book = c.get_registered_model("lineguard-fleet").tags
        assert json.loads(book["station.line-a"])["version"] == versions["v2"]

        # 3. rollback of station A: exactly the previous version, and the registry follows
        assert lineguard(["rollback", *cli[:2], *cli[4:]]) == 0
        bundle, state = running(a)
        assert state["bundle_version"] == v1 and bundle["history"]["anomaly"] == [v1]
        assert bundle["files"] == json.loads((bundle_dir / MANIFEST).read_text())["files"]
        assert running(b)[1]["bundle_version"] == v2
        book = c.get_registered_model("lineguard-fleet").tags
        assert json.loads(book["station.line-a"])["version"] == versions["v1"]
        assert "deployed.line-a" not in c.get_model_version("lineguard-fleet", versions["v2"]).tags
        assert "deployed.line-a" in c.get_model_version("lineguard-fleet", versions["v1"]).tags

        # 4. the fleet at a glance
        assert lineguard(["fleet", "status", "--station", a, "--station", b, "--user", "eddie", "--json",
                          f"tracking.uri={uri}", "tracking.enabled=true"]) == 0
        rows = {r["station_id"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
        assert rows["line-a"]["running"] == v1 and rows["line-b"]["running"] == v2
        assert all(r["reachable"] and r["matches_registry"] for r in rows.values())
        assert all(r["stability_index"] is not None for r in rows.values())
        runs = c.search_runs([exp], "tags.deployments_of = 'lineguard-fleet'")
        log = c.download_artifacts(runs[0].info.run_id, "deployments.jsonl", str(tmp_path / "dl"))
        entries = [json.loads(x) for x in open(log)]
        assert [e["ok"] for e in entries if e["action"] == "deploy"] == [True, True, False, False]
        assert entries[-1]["action"] == "rollback" and entries[-1]["user"] == "eddie"
