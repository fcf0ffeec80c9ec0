"""Log in: a password check, one at a time, for a bearer token."""

from __future__ import annotations

import threading

from fastapi import APIRouter, HTTPException, Request

from serving.api.auth import hash_password, verify_password
from serving.api.schemas import LoginRequest, LoginResponse

router = APIRouter(tags=["login"])
_one_at_a_time = threading.Lock()
_DUMMY = hash_password("not-a-user")


@router.post("/api/login", response_model=LoginResponse)
def login(body: LoginRequest, request: Request) -> LoginResponse:
    """Exchange a user's password for a bearer token."""
    users = request.app.state.station.cfg.api.users
    user = users.get(body.username)
    # one password check at a time: a login flood must not starve inspection of CPU;
    # unknown users cost the same check, so timing does not reveal who exists
    with _one_at_a_time:
        ok = verify_password(body.password, user.password_hash if user else _DUMMY)
    if user is None or not ok:
        raise HTTPException(401, "unknown user or wrong password")
    token = request.app.state.sessions.issue(body.username, user.role)
    return LoginResponse(token=token, role=user.role, user=body.username)
