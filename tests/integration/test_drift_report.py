"""Drift reports from the evidence a real station synced: once from the CLI, and as a Prefect deployment on a cron
schedule served against a real Prefect server that the project's scheduler starts."""

import json
import time
import urllib.request

import pytest

from flows.cli import main as lineguard
from serving.station.runtime import Station
from services import free_port, mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.services]


@pytest.fixture(scope="module")
def synced(tmp_path_factory, bundle_dir):
    """A replay station inspects the test cells twice over and syncs its evidence to a folder."""
    from helpers import station_config

    tmp = tmp_path_factory.mktemp("synced")
    images = bundle_dir.parent / (bundle_dir.name + "-images")
    sync = tmp / "sync"
    cfg = station_config(tmp, bundle_dir, images, source={"kind": "replay", "path": str(images), "rate_hz": 20},
                         evidence={"sync_url": str(sync), "sync_interval_s": 0.5})
    station = Station(cfg).start()
    assert station.wait(60)
    deadline = time.monotonic() + 20
    records = sync / cfg.station_id / "records"  # one object per record
    while time.monotonic() < deadline and len(list(records.rglob("*.json"))) < station.state.frames:
        time.sleep(0.2)
    station.stop()
    return sync, station.state.frames


def test_drift_report_once_from_the_cli_logged_to_mlflow(synced, bundle_dir, tmp_path, capsys):
    sync, n = synced
    out = tmp_path / "reports" / "drift.html"
    with mlflow_server(tmp_path / "mlflow") as uri:
        assert lineguard(["drift-report", "--evidence", f"file://{sync}", "--bundle", str(bundle_dir), "--out", str(out),
                          f"tracking.uri={uri}"]) == 0
        summary = json.loads(out.with_suffix(".json").read_text())
        from flows.params import TrackingParams
        from flows.tracking.mlflow_runs import client

        c = client(TrackingParams(uri=uri))
        run = c.get_run(summary["mlflow_run_id"])
        arts = {a.path for a in c.list_artifacts(run.info.run_id, "drift")}
    html = out.read_text()
    assert "<html" in html.lower() and len(html) > 100_000  # Evidently's self-contained report
    assert summary["n_parts"] == n and summary["stations"] == ["test-line"]
    assert set(summary) >= {"drifted", "embedding_drift", "embedding_drift_score", "trend"}
    assert out.with_name("drift_trend.png").stat().st_size > 5000
    assert run.info.run_name.endswith("-drift-report") and run.info.status == "FINISHED"
    assert arts == {"drift/drift.html", "drift/drift_trend.png", "drift/drift.json"}
    assert "drift report:" in capsys.readouterr().out


def test_an_empty_window_says_so_and_how_to_widen_it(synced, bundle_dir, tmp_path, capsys):
    sync, _ = synced
    code = lineguard(["drift-report", "--evidence", str(sync), "--bundle", str(bundle_dir), "--out",
                      str(tmp_path / "r.html"), "--station", "line-9", "tracking.enabled=false"])
    err = capsys.readouterr().err
    assert code == 2 and "no inspected parts" in err and "widen --hours" in err
    assert not (tmp_path / "r.html").exists()


def test_scheduling_without_a_prefect_server_says_how_to_start_one(bundle_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    code = lineguard(["drift-report", "--evidence", str(tmp_path), "--bundle", str(bundle_dir), "--out",
                      str(tmp_path / "r.html"), "--cron", "0 2 * * *"])
    err = capsys.readouterr().err
    assert code == 2 and "lineguard scheduler start" in err


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_a_scheduled_drift_report_on_a_real_prefect_server(synced, bundle_dir, tmp_path, monkeypatch, capsys):
    """Start the scheduler, register the cron deployment, read its schedule back from the server, trigger a run."""
    sync, n = synced
    monkeypatch.setenv("LINEGUARD_HOME", str(tmp_path / "home"))  # its own scheduler state, not the repo's
    (tmp_path / "home").mkdir()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from flows.orchestration import scheduler

    port = free_port()
    try:
        info = scheduler.start(port)
        assert info["server_healthy"] and info["server_pid"] and info["runner_pid"]
        monkeypatch.setenv("PREFECT_API_URL", info["api_url"])
        reports = tmp_path / "reports"
        assert lineguard(["drift-report", "--evidence", str(sync), "--bundle", str(bundle_dir), "--out",
                          str(reports), "--cron", "0 2 * * *", "--name", "nightly-drift", "tracking.enabled=false"]) == 0
        assert "nightly-drift" in capsys.readouterr().out
        url = f"{info['api_url']}/deployments/name/lineguard-drift-report/nightly-drift"
        deadline = time.monotonic() + 120
        dep = None
        while time.monotonic() < deadline:
            try:
                dep = _get(url)
                break
            except OSError:
                time.sleep(1)
        assert dep is not None, (tmp_path / "home" / ".lineguard" / "scheduler" / "runner.log").read_text()[-3000:]
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 2 * * *"]
        assert dep["parameters"]["out"] == str(reports) and dep["parameters"]["evidence"] == str(sync)
        run = scheduler.run_now("nightly-drift", timeout=300)
        assert run.state.is_completed(), run.state
        found = sorted(reports.glob("drift-*.html"))
        assert len(found) == 1 and json.loads(found[0].with_suffix(".json").read_text())["n_parts"] == n
    finally:
        stopped = scheduler.stop()
    assert stopped == {"runner_stopped": True, "server_stopped": True}
    assert not scheduler.healthy(f"http://127.0.0.1:{port}/api", timeout=1)
