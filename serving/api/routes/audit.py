"""The audit log (engineer), with whether its keyed chain verifies."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from serving.api.deps import require, station

router = APIRouter(tags=["audit"])


class AuditView(BaseModel):
    """Every audit entry, oldest first, and the verdict on the log as it is on disk now."""

    verified: bool
    problem: str | None
    entries: list[dict]


@router.get("/api/audit", response_model=AuditView, dependencies=[Depends(require("engineer"))])
def audit(st=Depends(station)) -> AuditView:
    """The log, checked against its key and head on every read (a tampered log also raises an alarm)."""
    check = st.audit.verify()
    if not check.ok:
        st.alarms.raise_("audit", f"the audit log does not verify: {check.problem}")
    try:
        entries = st.audit.entries()
    except ValueError:  # not JSON any more: the verdict above says where
        entries = []
    return AuditView(verified=check.ok, problem=check.problem, entries=entries)
