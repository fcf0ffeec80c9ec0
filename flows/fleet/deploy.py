"""Deploy a registered bundle to stations, roll a station back, and say what runs where.

The MLflow registry is the record. For a deploy of ``lineguard-<product>@candidate`` to a station:

* the model version gets ``deployed.<station_id>`` = {url, since, user, bundle_version} while the station
  runs it (removed from the version it ran before), so every version shows which stations run it since when;
* the registered model gets ``station.<station_id>`` = {url, version, bundle_version, since, user, kind}, the
  fleet's address book that ``lineguard fleet status`` reads;
* every attempt, refused ones included, is appended to the registered model's ``deployments`` log
  (JSON lines in a logged artifact of a run named ``<model>-deployments``).

>>> deploy("lineguard-elpv-mono@candidate", ["http://10.0.0.7:8000"], creds, params)   # doctest: +SKIP
"""

from __future__ import annotations

import getpass
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from flows.fleet.stations import StationClient, StationError
from flows.params import Params
from flows.tracking.mlflow_runs import client
from serving.engine.bundle import load_bundle
from serving.errors import ConfigError


@dataclass
class Credentials:
    """The engineer login used on every station."""

    user: str
    password: str
    verify: bool | str = True


@dataclass
class Outcome:
    """One station's answer to a deploy or rollback."""

    station: str
    station_id: str | None
    ok: bool
    bundle_version: str | None
    model_version: str | None
    detail: str
    seconds: float


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_model(ref: str) -> tuple[str, str]:
    """``NAME@ALIAS`` or ``NAME/VERSION`` -> (name, alias or version)."""
    for sep in ("@", "/"):
        if sep in ref:
            name, which = ref.rsplit(sep, 1)
            if name and which:
                return name, which
    raise ConfigError(f"--model {ref!r}: give NAME@ALIAS (e.g. lineguard-elpv-mono@candidate) or NAME/VERSION")


def _model_version(c, ref: str):
    name, which = parse_model(ref)
    try:
        return c.get_model_version(name, which) if which.isdigit() else c.get_model_version_by_alias(name, which)
    except Exception as exc:  # noqa: BLE001 - MLflow raises RestException/MlflowException for "not found"
        raise ConfigError(f"--model {ref}: not in the registry ({type(exc).__name__}: {str(exc)[:200]}); "
                          "list them with `mlflow models` or the MLflow UI") from None


def _download(c, mv, dest: Path) -> Path:
    import mlflow

    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dest),
                                                    tracking_uri=c._tracking_client.tracking_uri))
    load_bundle(path)  # the files arrived whole; the station checks the signature itself
    return path


def _record(c, name: str, mv, station_id: str, url: str, user: str, kind: str) -> None:
    """The station now runs ``mv``: move its ``deployed.<id>`` tag there and update the address book."""
    since = _now()
    book = c.get_registered_model(name).tags
    prev = json.loads(book.get(f"station.{station_id}", "null") or "null")
    if prev and prev.get("version") != mv.version:
        try:
            c.delete_model_version_tag(name, prev["version"], f"deployed.{station_id}")
        except Exception:  # noqa: BLE001 - the old version may be gone; the address book is what matters
            pass
    bv = mv.tags.get("bundle_version")
    c.set_model_version_tag(name, mv.version, f"deployed.{station_id}",
                            json.dumps({"url": url, "since": since, "user": user, "bundle_version": bv}))
    c.set_registered_model_tag(name, f"station.{station_id}", json.dumps(
        {"url": url, "version": mv.version, "bundle_version": bv, "since": since, "user": user, "kind": kind}))


def _log(c, name: str, entries: list[dict], params: Params) -> None:
    """Append deploy attempts to the model's deployment log (a run per model, its log as an artifact)."""
    exp = c.get_experiment_by_name(params.tracking.experiment)
    runs = c.search_runs([exp.experiment_id], f"tags.deployments_of = '{name}'", max_results=1)
    run_id = runs[0].info.run_id if runs else c.create_run(exp.experiment_id, run_name=f"{name}-deployments",
                                                            tags={"deployments_of": name, "stage": "deploy"}).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deployments.jsonl"
        try:
            old = Path(c.download_artifacts(run_id, "deployments.jsonl", tmp + "/old")).read_text()
        except Exception:  # noqa: BLE001 - the first deploy of this model
            old = ""
        path.write_text(old + "".join(json.dumps(e) + "\n" for e in entries))
        c.log_artifact(run_id, str(path))
    c.set_terminated(run_id, "FINISHED")


def deploy(ref: str, stations: list[str], creds: Credentials, params: Params, progress=print) -> list[Outcome]:
    """Upload the model version ``ref`` to each station, wait for its verdict, record what happened."""
    c = client(params.tracking)
    mv = _model_version(c, ref)
    name = mv.name
    outcomes, log = [], []
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = _download(c, mv, Path(tmp))
        m = load_bundle(bundle_dir).manifest
        progress(f"{name} version {mv.version} = {m.bundle_version} ({m.model_kind}); deploying to {len(stations)} "
                 f"station(s)")
        for url in stations:
            t0, sid = time.perf_counter(), None
            st = StationClient(url, creds.user, creds.password, creds.verify)
            try:
                sid = st.state()["station_id"]
                res = st.upload(bundle_dir)
                ok, detail = True, f"running {res['bundle_version']} ({res['signature']})"
                _record(c, name, mv, sid, url, creds.user, m.model_kind)
            except StationError as exc:
                ok, detail = False, str(exc)
            finally:
                st.close()
            out = Outcome(url, sid, ok, m.bundle_version, mv.version, detail, round(time.perf_counter() - t0, 2))
            outcomes.append(out)
            log.append({"time": _now(), "action": "deploy", "user": creds.user, **asdict(out)})
            progress(f"  {'OK     ' if ok else 'REFUSED'} {sid or url}: {detail}")
    _log(c, name, log, params)
    return outcomes


def rollback(stations: list[str], creds: Credentials, params: Params, kind: str = "anomaly",
             progress=print) -> list[Outcome]:
    """Return each station to the version it ran before; the registry follows."""
    c = client(params.tracking)
    outcomes = []
    for url in stations:
        t0, sid = time.perf_counter(), None
        st = StationClient(url, creds.user, creds.password, creds.verify)
        try:
            sid = st.state()["station_id"]
            res = st.rollback(kind)
            bv = res["bundle_version"]
            mv = _version_of(c, bv)
            if mv is not None:
                _record(c, mv.name, mv, sid, url, creds.user, kind)
                _log(c, mv.name, [{"time": _now(), "action": "rollback", "user": creds.user, "station": url,
                                   "station_id": sid, "bundle_version": bv, "model_version": mv.version}], params)
            out = Outcome(url, sid, True, bv, mv.version if mv else None, f"rolled back to {bv}"
                          + ("" if mv else " (not in this registry)"), round(time.perf_counter() - t0, 2))
        except StationError as exc:
            out = Outcome(url, sid, False, None, None, str(exc), round(time.perf_counter() - t0, 2))
        finally:
            st.close()
        outcomes.append(out)
        progress(f"  {'OK     ' if out.ok else 'FAILED '} {sid or url}: {out.detail}")
    return outcomes


def _version_of(c, bundle_version: str):
    """The registered model version holding ``bundle_version``, or None."""
    for mv in c.search_model_versions(f"tags.bundle_version = '{bundle_version}'"):
        return mv
    return None


def fleet_status(creds: Credentials, params: Params, model: str | None = None) -> list[dict]:
    """Every station in the registry's address books: the version it runs, its stability index, last sync."""
    c = client(params.tracking)
    rows = []
    models = [c.get_registered_model(model)] if model else c.search_registered_models("name LIKE 'lineguard-%'")
    for rm in models:
        for key, value in sorted(rm.tags.items()):
            if not key.startswith("station."):
                continue
            book = json.loads(value)
            row = {"station_id": key[len("station."):], "model": rm.name, "url": book["url"],
                   "registry_version": book["version"], "registry_bundle": book["bundle_version"],
                   "since": book["since"], "deployed_by": book["user"]}
            st = StationClient(book["url"], creds.user, creds.password, creds.verify, timeout=10)
            try:
                s = st.state()
                sync = s.get("sync") or {}
                stab = s.get("stability") or {}
                row |= {"reachable": True, "running": s["bundle_version"], "signer": s.get("bundle_signer"),
                        "stability_index": stab.get("index"), "last_sync": sync.get("last_sync_at"),
                        "sync_backlog": sync.get("backlog_records"), "status": s["status_text"]}
                row["matches_registry"] = (s["bundle_version"] == book["bundle_version"] if book.get("kind", "anomaly")
                                           == "anomaly" else None)
            except StationError as exc:
                row |= {"reachable": False, "error": str(exc)}
            finally:
                st.close()
            rows.append(row)
    return rows


def credentials(user: str | None, password_env: str, ca_cert: str | None) -> Credentials:
    """The engineer login from flags and environment (the password never on the command line)."""
    import os

    user = user or os.environ.get("LINEGUARD_STATION_USER")
    if not user:
        raise ConfigError("--user: the engineer login on the stations (or set LINEGUARD_STATION_USER)")
    password = os.environ.get(password_env) or getpass.getpass(f"station password for {user}: ")
    return Credentials(user, password, ca_cert or True)
