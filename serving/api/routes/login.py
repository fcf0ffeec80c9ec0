"""Log in and out, and end a user's sessions.

A login is throttled before its password is hashed (per client address, for all clients together,
and per user after repeated failures: 429 with Retry-After); the hash itself runs on one
low-priority thread with a short queue (serving.api.auth.PasswordChecker). Nothing here logs a
password, a token, or a user name that does not exist (people type their password there).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from serving.api.auth import Session, hash_password
from serving.api.deps import current_session, require, station
from serving.api.schemas import LoginRequest, LoginResponse, Ok, Revoked, SessionView

router = APIRouter(tags=["login"])
log = logging.getLogger("lineguard.api")
_DUMMY = hash_password("not-a-user")
#: how long a refused login waits for its 429 (at most; then Retry-After says the rest)
TARPIT_S = 1.0


def _too_many(wait: float, why: str) -> HTTPException:
    seconds = max(1, math.ceil(wait))
    return HTTPException(429, f"{why}; try again in {seconds} s", headers={"Retry-After": str(seconds)})


async def _refuse(wait: float, why: str) -> HTTPException:
    # the refused client waits for its answer, on no thread: a flood that answers itself as fast as the station
    # can reply would otherwise keep the interpreter busy and delay inspection all the same
    await asyncio.sleep(min(wait, TARPIT_S))
    return _too_many(wait - min(wait, TARPIT_S), why)


@router.post("/api/login", response_model=LoginResponse,
             responses={429: {"description": "too many attempts: wait Retry-After seconds"}})
async def login(body: LoginRequest, request: Request) -> LoginResponse:
    """Exchange a user's password for a bearer token."""
    guard, client = request.app.state.login_guard, request.client.host if request.client else "unknown"
    wait = guard.admit(client)
    if wait:
        raise await _refuse(wait, "too many login attempts")
    wait = guard.user_wait(body.username)
    if wait:
        raise await _refuse(wait, "too many failed logins for this user")
    user = request.app.state.station.cfg.api.users.get(body.username)
    # unknown users cost the same check, so timing does not reveal who exists
    ok = await run_in_threadpool(request.app.state.password_checker.check, body.password,
                                 user.password_hash if user else _DUMMY)
    if ok is None:
        raise await _refuse(1, "the station is busy checking other logins")
    if user is None or not ok:
        guard.failed(body.username)
        log.warning("failed login from %s%s", client, f" as {body.username!r}" if user else " (unknown user name)")
        raise HTTPException(401, "unknown user or wrong password")
    guard.succeeded(body.username)
    token = request.app.state.sessions.issue(body.username, user.role)
    log.info("login: %r (%s) from %s", body.username, user.role, client)
    return LoginResponse(token=token, role=user.role, user=body.username)


@router.post("/api/logout", response_model=Ok)
def logout(request: Request, s: Session = Depends(current_session)) -> Ok:
    """End this session: its token stops working at once."""
    request.app.state.sessions.revoke(s)
    return Ok()


@router.get("/api/sessions", response_model=list[SessionView], dependencies=[Depends(require("engineer"))])
def sessions(request: Request) -> list[SessionView]:
    """Users with live sessions, how many and until when (never the tokens)."""
    return [SessionView(**row) for row in request.app.state.sessions.listing()]


@router.post("/api/sessions/{user}/revoke", response_model=Revoked)
def revoke(user: Annotated[str, PathParam(min_length=1, max_length=64)], request: Request, s: Session = Depends(require("engineer")), st=Depends(station)) -> Revoked:
    """End every session of ``user`` (a lost tablet, a person who left); audited."""
    n = request.app.state.sessions.revoke_user(user)
    st.audit.append(s.user, "sessions_revoked", {"of": user, "sessions": n})
    return Revoked(user=user, revoked=n)
