"""The operator page and API (FastAPI): one router per resource, authentication on by default.

    GET  /                      operator page (live PASS/FAIL, review with P / F keys)      public
    POST /api/login             {username, password} -> {token, role}                        public
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
    PUT  /api/gate              change gate settings                             (engineer)
    GET  /api/bundle            the running bundle's manifest
    POST /api/bundle            {path}: verify and load a new bundle             (engineer)
    GET  /api/audit             the audit log                                    (engineer)

>>> app = create_app(station)   # doctest: +SKIP
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.api.auth import Sessions
from serving.api.deps import authenticate
from serving.api.device_keys import DeviceKeys
from serving.api.routes import alarms, audit, bundle, capture, devices, evidence, gate, login, ops, review, state, trigger
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
ROUTERS = (ops, login, state, alarms, evidence, review, capture, gate, bundle, audit, trigger, devices)


def create_app(station) -> FastAPI:
    """The FastAPI app for a running :class:`serving.station.runtime.Station`."""
    # no docs UI: it loads its script from a CDN; the schema itself is at /openapi.json
    app = FastAPI(title=f"Lineguard station {station.cfg.station_id}", docs_url=None, redoc_url=None,
                  dependencies=[Depends(authenticate)])

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response
    app.state.station = station
    app.state.sessions = Sessions(station.cfg.api.session_hours)
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
