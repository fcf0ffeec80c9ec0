"""Gate settings: read them, and change them (engineer; validated as a whole, audited)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import ValidationError

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import GateChange
from serving.gate.rules import GateRules
from serving.strict import error_lines

router = APIRouter(tags=["gate"])


@router.get("/api/gate", response_model=GateRules)
def get_gate(st=Depends(station)) -> GateRules:
    """The rules in force, with the thresholds actually used."""
    return st.rules


@router.put("/api/gate", response_model=GateRules)
def put_gate(change: GateChange, s: Session = Depends(require("engineer")), st=Depends(station)) -> GateRules:
    """Change some gate fields; the whole rule set is re-validated before it takes effect."""
    try:
        return st.update_gate(change.model_dump(exclude_unset=True), s.user)
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(error_lines(exc, model=GateRules))) from None
