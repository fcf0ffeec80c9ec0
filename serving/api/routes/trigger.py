"""Capture triggers pushed over HTTP (``source.trigger: http``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from serving.api.deps import require, station
from serving.api.schemas import Ok

router = APIRouter(tags=["trigger"])


@router.post("/api/trigger", response_model=Ok, dependencies=[Depends(require("operator"))])
def trigger(st=Depends(station)) -> Ok:
    """Trigger one capture now (timestamped on arrival)."""
    if st.http_trigger is None:
        raise HTTPException(409, "this station is not configured with source.trigger: http")
    st.http_trigger.fire()
    return Ok()
