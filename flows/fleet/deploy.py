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

from flows.fleet.stations import StationClient, StationError, StationTimeout
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
    """The station now runs ``mv``: move its ``deployed.<id>`` tag there and update the address books (a station
    that moved from another model leaves that model's book)."""
    since = _now()
    bv = mv.tags.get("bundle_version")
    key = f"station.{station_id}"
    for rm in c.search_registered_models("name LIKE 'lineguard-%'"):
        if key not in rm.tags:
            continue
        try:
            prev = json.loads(rm.tags[key])
        except ValueError:
            prev = {}
        same_kind = prev.get("kind", "anomaly") == kind
        if not same_kind or (rm.name == name and prev.get("version") == mv.version):
            continue
        if isinstance(prev.get("version"), str):
            try:
                c.delete_model_version_tag(rm.name, prev["version"], f"deployed.{station_id}")
            except Exception:  # noqa: BLE001 - the old version may be gone; the address book is what matters
                pass
        if rm.name != name:
            c.delete_registered_model_tag(rm.name, key)
    c.set_model_version_tag(name, mv.version, f"deployed.{station_id}",
                            json.dumps({"url": url, "since": since, "user": user, "bundle_version": bv}))
    c.set_registered_model_tag(name, key, json.dumps(
        {"url": url, "version": mv.version, "bundle_version": bv, "since": since, "user": user, "kind": kind}))


def _log(c, name: str, entries: list[dict], params: Params) -> None:
    """Append deploy attempts to the model's deployment log (a run per model, its log as an artifact)."""
    exp = c.get_experiment_by_name(params.tracking.experiment)
    runs = c.search_runs([exp.experiment_id], f"tags.deployments_of = '{name}'", max_results=1)
    run_id = runs[0].info.run_id if runs else c.create_run(exp.experiment_id, run_name=f"{name}-deployments",
                                                            tags={"deployments_of": name, "stage": "deploy"}).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deployments.jsonl"
        # only a log that is not there starts afresh: a failed download must not wipe the history
        exists = any(a.path == "deployments.jsonl" for a in c.list_artifacts(run_id))
        old = Path(c.download_artifacts(run_id, "deployments.jsonl", tmp + "/old")).read_text() if exists else ""
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
            out = _deploy_one(c, name, mv, m, bundle_dir, url, creds)
            outcomes.append(out)
            log.append({"time": _now(), "action": "deploy", "user": creds.user, **asdict(out)})
            progress(f"  {'OK     ' if out.ok else 'REFUSED'} {out.station_id or url}: {out.detail}")
    try:
        _log(c, name, log, params)
    except Exception as exc:  # noqa: BLE001 - the stations have answered; say the log failed, do not hide it
        progress(f"  the deployments log of {name} was not updated: {type(exc).__name__}: {exc}")
    return outcomes


def _deploy_one(c, name: str, mv, m, bundle_dir: Path, url: str, creds: Credentials) -> Outcome:
    """Upload to one station and record what it runs; a timeout or a 5xx is resolved by asking it again."""
    t0, sid = time.perf_counter(), None
    st = StationClient(url, creds.user, creds.password, creds.verify)
    try:
        sid = st.field(st.state(), "station_id", "/api/state")
        try:
            res = st.upload(bundle_dir)
            running = st.field(res, "bundle_version", "the upload")
        except StationTimeout as exc:  # it may have switched all the same: what runs there now?
            running = st.field(StationClient(url, creds.user, creds.password, creds.verify).bundle(),
                               "bundle_version", "/api/bundle")
            if running != m.bundle_version:
                raise
            res = {"signature": f"confirmed by asking again after: {exc}"}
        if running != m.bundle_version:
            raise StationError(f"{url}: answered that it runs {running}, not {m.bundle_version}")
        ok, detail = True, f"running {running} ({res.get('signature', '')})"
        try:
            _record(c, name, mv, sid, url, creds.user, m.model_kind)
        except Exception as exc:  # noqa: BLE001 - the station runs it; the registry must say it could not follow
            detail += f"; REGISTRY NOT UPDATED ({type(exc).__name__}: {exc})"
    except StationError as exc:
        ok, detail = False, str(exc)
    finally:
        st.close()
    return Outcome(url, sid, ok, m.bundle_version, mv.version, detail, round(time.perf_counter() - t0, 2))


def rollback(stations: list[str], creds: Credentials, params: Params, kind: str = "anomaly",
             progress=print) -> list[Outcome]:
    """Return each station to the version it ran before; the registry follows."""
    c = client(params.tracking)
    outcomes = []
    for url in stations:
        t0, sid = time.perf_counter(), None
        st = StationClient(url, creds.user, creds.password, creds.verify)
        try:
            sid = st.field(st.state(), "station_id", "/api/state")
            bv = st.field(st.rollback(kind), "bundle_version", "the rollback")
            mv = _version_of(c, bv, kind)
            if mv is not None:
                try:
                    _record(c, mv.name, mv, sid, url, creds.user, kind)
                    _log(c, mv.name, [{"time": _now(), "action": "rollback", "user": creds.user, "station": url,
                                       "station_id": sid, "bundle_version": bv, "model_version": mv.version}], params)
                except Exception as exc:  # noqa: BLE001 - the station rolled back; say the registry did not follow
                    progress(f"  registry not updated for {sid}: {type(exc).__name__}: {exc}")
            out = Outcome(url, sid, True, bv, mv.version if mv else None, f"rolled back to {bv}"
                          + ("" if mv else " (not in this registry)"), round(time.perf_counter() - t0, 2))
        except StationError as exc:
            out = Outcome(url, sid, False, None, None, str(exc), round(time.perf_counter() - t0, 2))
        finally:
            st.close()
        outcomes.append(out)
        progress(f"  {'OK     ' if out.ok else 'FAILED '} {sid or url}: {out.detail}")
    return outcomes


def _version_of(c, bundle_version: str, kind: str):
    """The registered version (of Lineguard's models) holding ``bundle_version``, or None; matched here, not in a
    search filter built from what a station said."""
    suffix = "-detector"
    for mv in c.search_model_versions("name LIKE 'lineguard-%'"):
        if mv.tags.get("bundle_version") == bundle_version and mv.name.endswith(suffix) == (kind == "detector"):
            return mv
    return None


def fleet_status(creds: Credentials, params: Params, stations: list[str], model: str | None = None) -> list[dict]:
    """Every station in the registry's address books: the version it runs, its stability index, last sync.

    Only the ``stations`` given (your own inventory) are asked, with the engineer login: a URL found in the
    registry alone is listed but never sent a password (anyone who can write a registry tag could plant one)."""
    c = client(params.tracking)
    mine = {u.rstrip("/") for u in stations}
    rows = []
    models = [c.get_registered_model(model)] if model else c.search_registered_models("name LIKE 'lineguard-%'")
    for rm in models:
        for key, value in sorted(rm.tags.items()):
            if not key.startswith("station."):
                continue
            try:
                book = json.loads(value)
                row = {"station_id": key[len("station."):], "model": rm.name, "url": str(book["url"]).rstrip("/"),
                       "registry_version": book["version"], "registry_bundle": book["bundle_version"],
                       "since": book["since"], "deployed_by": book["user"]}
            except (ValueError, KeyError, TypeError):
                rows.append({"station_id": key[len("station."):], "model": rm.name, "reachable": False,
                             "error": f"unreadable registry tag {key}", "registry_version": "?", "since": "?"})
                continue
            if row["url"] not in mine:
                rows.append({**row, "reachable": False, "error": "not asked: not among your --station URLs"})
                continue
            st = StationClient(row["url"], creds.user, creds.password, creds.verify, timeout=10)
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
