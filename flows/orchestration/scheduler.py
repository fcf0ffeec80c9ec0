"""Scheduled flows: a Prefect server on 127.0.0.1 and one runner process that serves Lineguard's deployments.

``lineguard scheduler start`` starts both (PIDs recorded under ``.lineguard/scheduler/``), each
``lineguard ... --cron`` adds a schedule (a small JSON spec) and restarts the runner so it serves it,
``lineguard scheduler stop`` stops both by PID. Without a running server Prefect would fall back to a
throw-away ephemeral one and nothing would ever fire; every command here checks the server first and
says how to start it.

>>> add_schedule("nightly-drift", "drift-report", "0 2 * * *", {"evidence": "station-data/sync"})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.settings import project_root
from serving.errors import ConfigError

#: a schedule's ``flow`` -> the Prefect flow object that runs it
FLOWS = {"enroll": "flows.orchestration.pipeline:enroll_flow",
         "drift-report": "flows.orchestration.loop:drift_report_flow",
         "label-sync": "flows.orchestration.loop:label_sync_flow",
         "retrain": "flows.orchestration.loop:retrain_flow"}
DEFAULT_PORT = 4200


@dataclass
class Schedule:
    """One scheduled deployment: which flow, when (cron, UTC), with what parameters."""

    name: str
    flow: str
    cron: str
    parameters: dict


def state_dir() -> Path:
    """Where the scheduler keeps its PIDs, logs and schedules."""
    d = project_root() / ".lineguard" / "scheduler"
    (d / "schedules").mkdir(parents=True, exist_ok=True)
    return d


def api_url(port: int | None = None) -> str:
    """The Prefect API this project's scheduler serves (``PREFECT_API_URL`` wins)."""
    if port is None and os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    saved = state_dir() / "port"
    port = port or (int(saved.read_text()) if saved.exists() else DEFAULT_PORT)
    return f"http://127.0.0.1:{port}/api"


def healthy(url: str | None = None, timeout: float = 2.0) -> bool:
    """True when the Prefect server answers its health check."""
    try:
        with urllib.request.urlopen(f"{url or api_url()}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def require_server() -> str:
    """The API URL of a running server, or a one-line error that says how to start one."""
    url = api_url()
    if not healthy(url):
        raise ConfigError(f"no Prefect server at {url}: start the scheduler with `lineguard scheduler start` "
                          "(it runs `prefect server start --host 127.0.0.1` and a runner, and records their PIDs)")
    return url


def _pid(name: str) -> int | None:
    path = state_dir() / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text())
    try:
        os.kill(pid, 0)
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return pid


def _spawn(name: str, cmd: list[str], env: dict) -> int:
    log = open(state_dir() / f"{name}.log", "a")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **env})
    (state_dir() / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _kill(name: str, grace: float = 10.0) -> bool:
    pid = _pid(name)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid(name) is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _pid(name) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    (state_dir() / f"{name}.pid").unlink(missing_ok=True)
    return True


def start(port: int = DEFAULT_PORT, timeout: float = 180.0) -> dict:
    """Start the Prefect server (if not running) and the runner; return their PIDs and the API URL."""
    url = api_url(port)
    if _pid("server") is None or not healthy(url):
        _kill("server")
        (state_dir() / "port").write_text(str(port))
        _spawn("server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                          str(port), "--no-ui", "--analytics-off"],
               # the server's database lives with the project's scheduler state, not in ~/.prefect
               {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(state_dir() / "prefect-home")})
        deadline = time.monotonic() + timeout
        while not healthy(url):
            if _pid("server") is None or time.monotonic() > deadline:
                tail = (state_dir() / "server.log").read_text()[-2000:]
                raise ConfigError(f"the Prefect server did not become healthy on {url}; its log ends:\n{tail}")
            time.sleep(0.5)
    restart_runner()
    return status()


def restart_runner() -> int:
    """(Re)start the runner that serves every schedule (it re-reads them at start)."""
    _kill("runner")
    return _spawn("runner", [sys.executable, "-m", "flows.orchestration.scheduler", "serve"],
                  {"PREFECT_API_URL": api_url()})


def stop() -> dict:
    """Stop the runner, then the server, by their PIDs."""
    return {"runner_stopped": _kill("runner"), "server_stopped": _kill("server")}


def schedules() -> list[Schedule]:
    """Every schedule this project has."""
    return [Schedule(**json.loads(p.read_text())) for p in sorted((state_dir() / "schedules").glob("*.json"))]


def status() -> dict:
    """Server and runner state, and the schedules."""
    return {"api_url": api_url(), "server_pid": _pid("server"), "server_healthy": healthy(),
            "runner_pid": _pid("runner"), "schedules": [asdict(s) for s in schedules()]}


def add_schedule(name: str, flow: str, cron: str, parameters: dict) -> Schedule:
    """Save a schedule and have the runner serve it (the scheduler must be running)."""
    from prefect.client.schemas.schedules import CronSchedule

    if flow not in FLOWS:
        raise ConfigError(f"flow {flow!r}: choose one of {sorted(FLOWS)}")
    try:
        CronSchedule(cron=cron)
    except ValueError as exc:
        raise ConfigError(f"cron {cron!r} is not a valid cron expression ({exc}); e.g. '0 2 * * *' = 02:00 daily") from None
    require_server()
    spec = Schedule(name, flow, cron, parameters)
    (state_dir() / "schedules" / f"{name}.json").write_text(json.dumps(asdict(spec), indent=1, default=str))
    restart_runner()
    return spec


def flow_of(spec: Schedule):
    """The Prefect flow object a schedule runs."""
    module, attr = FLOWS[spec.flow].split(":")
    return getattr(importlib.import_module(module), attr)


def deployment_name(spec: Schedule) -> str:
    """``<flow name>/<deployment name>``, as Prefect addresses it."""
    return f"{flow_of(spec).name}/{spec.name}"


def run_now(name: str, timeout: float = 600.0):
    """Trigger a schedule's deployment now on the server and wait for its run; returns the flow run."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = require_server()
    spec = next((s for s in schedules() if s.name == name), None)
    if spec is None:
        raise ConfigError(f"no schedule named {name!r}; see `lineguard scheduler status`")
    with temporary_settings({PREFECT_API_URL: url}):  # this scheduler's server, whatever the process read at import
        return run_deployment(deployment_name(spec), timeout=timeout, poll_interval=1)


def serve() -> None:
    """The runner: serve every schedule as a Prefect deployment until SIGTERM (blocks)."""
    from prefect import serve as prefect_serve

    specs = schedules()
    if not specs:
        print("no schedules yet; waiting (add one with --cron)", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        return
    deployments = [flow_of(s).to_deployment(name=s.name, cron=s.cron, parameters=s.parameters, tags=["lineguard"])
                   for s in specs]
    prefect_serve(*deployments, pause_on_shutdown=False)


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    from flows.settings import quiet_environment

    quiet_environment(project_root())
    serve()
