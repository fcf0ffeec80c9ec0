"""Capture triggers pushed over HTTP (``source.trigger: http``): a device key or an operator login."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request

from serving.api.deps import station
from serving.api.schemas import Ok

router = APIRouter(tags=["trigger"])


@router.post("/api/trigger", response_model=Ok)
def trigger(request: Request, st=Depends(station)) -> Ok:
    """Trigger one capture now; the part's trigger time is this request's arrival."""
    t = time.monotonic_ns()
    who = getattr(request.state, "device", None) or request.state.session
    if getattr(who, "role", "operator") not in ("operator", "engineer"):
        raise HTTPException(403, "triggering needs a device key or the operator role")
    if st.http_trigger is None:
        raise HTTPException(409, "this station is not configured with source.trigger: http")
    st.http_trigger.fire(t)
    return Ok()
