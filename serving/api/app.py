"""The operator page and API (FastAPI): one router per resource, authentication on by default.

    GET  /                      operator page (live PASS/FAIL, review with P / F keys)      public
    POST /api/login             {username, password} -> {token, role}  (rate-limited: 429)  public
    POST /api/logout            end this session
    GET  /api/sessions          users with live sessions                         (engineer)
    POST /api/sessions/{user}/revoke   end every session of a user (audited)      (engineer)
    GET  /healthz, /metrics     liveness, Prometheus metrics                                 public
    GET  /api/state             live verdict, score, counts, alarms, online/PLC state
    GET  /api/evidence/{id}/{crop|overlay}.png   decrypted evidence image
    GET  /api/review            3-5 suspects (borderline and novel scores) awaiting review
    POST /api/review/{id}       {disposition: false_alarm|defect, class_name}   (operator+)
    POST /api/trigger           capture trigger for `source.trigger: http`  (operator+, or X-Device-Key)
    POST /api/alarms/{name}/ack acknowledge an alarm (audited)                   (operator+)
    GET  /api/capture           the current recalibration capture and its candidates
    POST /api/capture           {parts, minutes}: keep the next parts as candidate normals  (operator+)
    POST /api/capture/stop      end the capture now                               (operator+)
    POST /api/capture/{id}/confirm  {exclude, include_flagged}: confirm as normal  (operator+)
    POST /api/stop-line/reset   release the stop-line output (audited)           (operator+)
    GET/POST/DELETE /api/device-keys[/{name}]   trigger-only device keys         (engineer)
    GET  /api/gate              the rules in force
    PUT  /api/gate              change gate settings; kept across restarts       (engineer)
    GET  /api/bundle            the running bundle's manifest, signer and version history
    POST /api/bundle            {path}: verify and load a new bundle             (engineer)
    POST /api/bundle/upload     tar(.gz) body: verify, smoke-test, switch         (engineer)
    POST /api/bundle/rollback   {kind}: back to the version that ran before       (engineer)
    GET  /api/audit             the audit log and whether its keyed chain verifies  (engineer)
    GET  /api/explain/{id}      why a FAIL failed: region, 3 normal patches, nearest normal
    GET  /api/explain/{id|live}/{panel}.jpg   its picture: heatmap | nearest normal | 3 normal patches
    GET  /setup, /api/setup/... setup mode: live focus/exposure, ROI, baseline, signal test, checklist

Every request body is limited (413) and logins are throttled before any password is hashed (429):
see serving/api/body_limit.py, serving/api/rate_limit.py and SECURITY.md.

>>> app = create_app(station)   # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.api.auth import PasswordChecker, Sessions, refuse_demo_passwords
from serving.api.body_limit import BodyLimit
from serving.api.deps import authenticate
from serving.api.device_keys import DeviceKeys
from serving.api.rate_limit import LoginGuard
from serving.api.routes import alarms, audit, bundle, capture, devices, evidence, gate, login, ops, review, state, trigger
from serving.api.routes import explain, setup
from serving.strict import error_lines

#: what a browser may do with the station's pages: only its own script and pictures, never inside a frame
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                               "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ROUTERS = (ops, login, state, alarms, evidence, review, capture, gate, bundle, audit, trigger, devices, setup, explain)


#: bodies these paths need are small: a login flood cannot send much
SMALL_BODIES = {"/api/login": 4096}
#: the bundle upload takes large bodies, from a logged-in engineer only (bundles.max_upload_mb)
UPLOAD_PATHS = ("/api/bundle/upload",)


def create_app(station) -> FastAPI:
    """The FastAPI app for a running :class:`serving.station.runtime.Station`; refuses (ConfigError) demo
    passwords on a station that is not marked ``api.demo``."""
    api = station.cfg.api
    refuse_demo_passwords(api)

    @asynccontextmanager
    async def lifespan(_app):
        # blocking requests share a few threads: the API cannot spawn enough of them to crowd out inspection
        anyio.to_thread.current_default_thread_limiter().total_tokens = api.worker_threads
        yield

    # no docs UI: it loads its script from a CDN; the schema itself is at /openapi.json
    app = FastAPI(title=f"Lineguard station {station.cfg.station_id}", docs_url=None, redoc_url=None,
                  dependencies=[Depends(authenticate)], lifespan=lifespan)
    # added first, so innermost: its 413 gets the security headers, and FastAPI answers the HTTPException it
    # raises from a body that streams past the limit
    upload_mb = getattr(getattr(station.cfg, "bundles", None), "max_upload_mb", 0) or 0
    app.add_middleware(BodyLimit, limit=api.max_body_kb * 1024, small=SMALL_BODIES,
                       upload={p: int(upload_mb * 2**20) for p in UPLOAD_PATHS if upload_mb})

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response
    app.state.station = station
    app.state.sessions = Sessions(api.session_hours)
    app.state.login_guard = LoginGuard(api.login_per_minute, api.logins_per_second, api.login_lockout_s)
    app.state.password_checker = PasswordChecker()
    app.state.device_keys = DeviceKeys(station.cfg.api.device_keys)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # one line per wrong field, named as the client sent it: "disposition: Input should be ..."
        body = getattr(request.scope.get("route"), "body_field", None)
        model = body.field_info.annotation if body is not None else None
        return JSONResponse({"detail": "; ".join(error_lines(exc, model=model))}, status_code=422)

    for module in ROUTERS:
        app.include_router(module.router)
    return app
