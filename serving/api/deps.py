"""Authentication for the whole app by default, and role checks per route.

Every route requires a bearer token unless its path is in :data:`PUBLIC` (Frigate applies
its auth the same way: to the app, with a short allowlist). A route that changes state adds
``Depends(require("operator"))`` or ``require("engineer")``.
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request

from serving.api.auth import Session, allowed

#: (method, path) pairs reachable without a token; everything else needs one
PUBLIC = frozenset({("GET", "/"), ("GET", "/setup"), ("GET", "/static/{name}"), ("GET", "/healthz"),
                    ("GET", "/metrics"), ("POST", "/api/login")})


def authenticate(request: Request) -> None:
    """App-wide dependency: a valid session on ``request.state.session``, unless the route is public."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    if (request.method, path) in PUBLIC:
        return
    if (request.method, path) == ("POST", "/api/trigger"):  # a device key opens this one door only
        device = request.app.state.device_keys.check(request.headers.get("x-device-key"))
        if device is not None:
            request.state.device = device
            return
    header = request.headers.get("authorization", "")
    token = header.split(" ", 1)[1] if header.lower().startswith("bearer ") else None
    session = request.app.state.sessions.get(token)
    if session is None:
        raise HTTPException(401, "log in first: POST /api/login, then send 'Authorization: Bearer <token>'")
    request.state.session = session


def current_session(request: Request) -> Session:
    """The logged-in session of this request."""
    return request.state.session


def require(role: str):
    """A dependency that refuses (403) a session whose role is below ``role``."""
    def check(s: Session = Depends(current_session)) -> Session:
        if not allowed(s.role, role):
            raise HTTPException(403, f"'{s.user}' is {s.role}; this needs the {role} role")
        return s
    check.role = role  # what a route needs, readable from its dependencies (the API's own tests list them)
    return check


def station(request: Request):
    """The running :class:`~serving.station.runtime.Station`."""
    return request.app.state.station
