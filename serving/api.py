"""The operator page and API (FastAPI). Nothing that changes state is anonymous.

    GET  /                      operator page (live PASS/FAIL, review with P / F keys)
    POST /api/login             {username, password} -> {token, role}
    GET  /api/state             live verdict, score, counts, alarms, online/PLC state
    GET  /api/evidence/{id}/{crop|overlay}.png   decrypted evidence image
    GET  /api/review            3-5 suspects (borderline and novel scores) awaiting review
    POST /api/review/{id}       {disposition: false_alarm|defect, class_name}   (operator+)
    POST /api/trigger           capture trigger for `source.trigger: http`       (operator+)
    PUT  /api/gate              change gate settings                             (engineer)
    POST /api/bundle            {path}: verify and load a new bundle             (engineer)
    GET  /api/audit             the audit log                                    (engineer)
    GET  /metrics, /healthz     Prometheus metrics, liveness (read-only)
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.auth import Session, Sessions, allowed, hash_password, verify_password
from serving.errors import LineguardError

PAGE = Path(__file__).parent / "static" / "operator.html"


class Login(BaseModel):
    """Login request."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class Review(BaseModel):
    """An operator's disposition of one part."""

    model_config = ConfigDict(extra="forbid")
    disposition: Literal["false_alarm", "defect"]
    class_name: str | None = Field(None, max_length=64)


class BundleRequest(BaseModel):
    """Path of a bundle folder on the station."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)


def create_app(station) -> FastAPI:
    """The FastAPI app for a running :class:`serving.station.Station`."""
    cfg = station.cfg
    sessions = Sessions(cfg.api.session_hours)
    app = FastAPI(title=f"Lineguard station {cfg.station_id}", docs_url="/api/docs", redoc_url=None)

    def session(authorization: str | None = Header(None)) -> Session:
        token = authorization.split(" ", 1)[1] if authorization and authorization.lower().startswith("bearer ") else None
        s = sessions.get(token)
        if s is None:
            raise HTTPException(401, "log in first: POST /api/login, then send 'Authorization: Bearer <token>'")
        return s

    def role(needed: str):
        def check(s: Session = Depends(session)) -> Session:
            if not allowed(s.role, needed):
                raise HTTPException(403, f"'{s.user}' is {s.role}; this needs the {needed} role")
            return s
        return check

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, exc: ValidationError):
        e = exc.errors()[0]
        return JSONResponse({"detail": f"{'.'.join(map(str, e['loc']))}: {e['msg']}"}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/healthz")
    def health() -> dict:
        return {"ok": True, "running": station.state.running, "finished": station.state.finished}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(station.metrics.render(), media_type="text/plain; version=0.0.4")

    login_lock = threading.Lock()
    dummy = hash_password("not-a-user")

    @app.post("/api/login")
    def login(body: Login) -> dict:
        user = cfg.api.users.get(body.username)
        # one password check at a time: a login flood must not starve inspection of CPU;
        # unknown users cost the same check, so timing does not reveal who exists
        with login_lock:
            ok = verify_password(body.password, user.password_hash if user else dummy)
        if user is None or not ok:
            raise HTTPException(401, "unknown user or wrong password")
        return {"token": sessions.issue(body.username, user.role), "role": user.role, "user": body.username}

    @app.get("/api/state")
    def state(s: Session = Depends(session)) -> dict:
        st = station.state
        last = st.last
        return {
            "station_id": cfg.station_id, "user": s.user, "role": s.role,
            "bundle_version": station.engine.bundle.manifest.bundle_version,
            "threshold": station.rules.image_threshold,
            "last": None if last is None else {k: last.get(k) for k in ("id", "seq", "verdict", "rule", "score",
                                                                       "area_px", "reasons", "source")},
            "counts": st.counts, "frames": st.frames, "dropped": station.source.dropped, "late": station.source.late,
            "actuation": station.actuator.counts, "plc_connected": station.actuator.connected,
            "online": station.online, "running": st.running, "finished": st.finished,
            "alarms": [{"name": a.name, "message": a.message, "level": a.level, "count": a.count}
                       for a in station.alarms.active()],
            "reviewed": station.evidence.reviewed(),
        }

    @app.get("/api/evidence/{rid}/{kind}.png")
    def image(rid: int, kind: Literal["crop", "overlay"], s: Session = Depends(session)) -> Response:
        rec = station.evidence.get(rid)
        name = rec and rec.get(f"{kind}_file")
        if not name:
            raise HTTPException(404, f"record {rid} has no {kind} image (PASS frames are sampled)")
        try:
            return Response(station.evidence.read_image(name), media_type="image/png")
        except LineguardError as exc:
            raise HTTPException(503, str(exc)) from None

    @app.get("/api/review")
    def review(s: Session = Depends(session)) -> dict:
        thr = station.rules.image_threshold
        cands = station.evidence.query("disposition IS NULL AND overlay_file IS NOT NULL AND score IS NOT NULL", limit=500)
        for c in cands:
            c["distance"] = abs(math.log(max(c["score"], 1e-9) / max(thr, 1e-9)))
        borderline = sorted(cands, key=lambda c: c["distance"])
        novel = sorted(cands, key=lambda c: -c["score"])
        picks, seen = [], set()
        for c in [*borderline[:3], *novel]:
            if c["id"] not in seen and len(picks) < cfg.api.review_size:
                seen.add(c["id"])
                picks.append({"id": c["id"], "seq": c["seq"], "score": c["score"], "verdict": c["verdict"],
                              "rule": c["rule"], "kind": "borderline" if c in borderline[:3] else "novel"})
        return {"threshold": thr, "classes": station.engine.bundle.manifest.class_names + ["other"], "items": picks}

    @app.post("/api/review/{rid}")
    def dispose(rid: int, body: Review, s: Session = Depends(role("operator"))) -> dict:
        if not station.evidence.set_disposition(rid, body.disposition, body.class_name, s.user):
            raise HTTPException(404, f"no evidence record {rid}")
        station.audit.append(s.user, "disposition", {"id": rid, **body.model_dump()})
        return {"ok": True, "id": rid}

    @app.post("/api/trigger")
    def trigger(s: Session = Depends(role("operator"))) -> dict:
        if station.http_trigger is None:
            raise HTTPException(409, "this station is not configured with source.trigger: http")
        station.http_trigger.fire()
        return {"ok": True}

    @app.put("/api/gate")
    def gate(changes: dict, s: Session = Depends(role("engineer"))) -> dict:
        from serving.config import GateConfig

        unknown = sorted(set(changes) - set(GateConfig.model_fields))
        if unknown:
            raise HTTPException(422, f"unknown gate field(s) {unknown}; allowed: {sorted(GateConfig.model_fields)}")
        try:
            rules = station.update_gate(changes, s.user)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise HTTPException(422, f"gate.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
        return {"ok": True, "rules": rules.model_dump(mode="json")}

    @app.post("/api/bundle")
    def bundle(body: BundleRequest, s: Session = Depends(role("engineer"))) -> dict:
        try:
            return {"ok": True, "bundle_version": station.reload_bundle(body.path, s.user)}
        except LineguardError as exc:
            raise HTTPException(409, f"{exc} (still running {station.engine.bundle.manifest.bundle_version})") from None

    @app.get("/api/audit")
    def audit(s: Session = Depends(role("engineer"))) -> list[dict]:
        return station.audit.entries()

    return app
