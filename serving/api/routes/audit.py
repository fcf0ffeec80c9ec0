"""The audit log (engineer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.api.deps import require, station

router = APIRouter(tags=["audit"])


@router.get("/api/audit", dependencies=[Depends(require("engineer"))])
def audit(st=Depends(station)) -> list[dict]:
    """Every audit entry, oldest first."""
    return st.audit.entries()
