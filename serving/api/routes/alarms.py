"""Alarms: acknowledge one (audited), and reset the stop-line output the station raised."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import Ok

router = APIRouter(tags=["alarms"])


@router.post("/api/alarms/{name}/ack", response_model=Ok)
def acknowledge(name: str, s: Session = Depends(require("operator")), st=Depends(station)) -> Ok:
    """An operator has seen alarm ``name``: an event alarm goes; a state alarm stays until its cause clears."""
    alarm = st.alarms.acknowledge(name, s.user)
    if alarm is None:
        raise HTTPException(404, f"no alarm {name!r} is shown")
    st.audit.append(s.user, "alarm_acknowledged", {"alarm": name, "message": alarm.message, "kind": alarm.kind})
    return Ok()


@router.post("/api/stop-line/reset", response_model=Ok)
def reset_stop_line(s: Session = Depends(require("operator")), st=Depends(station)) -> Ok:
    """Release the stop-line output (after the cause was dealt with at the line)."""
    if not st.actuator.link.stop_line_latched:
        raise HTTPException(409, "the stop-line output is not set")
    st.actuator.reset_stop_line(f"reset on the page by {s.user}")
    st.audit.append(s.user, "stop_line_reset", {})
    return Ok()
