"""Gate settings: read them, and change them (engineer; validated as a whole, kept near the calibration,
confirmed when they let parts through, saved for the next start, audited)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import ValidationError

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import GateChange
from serving.gate.rules import GateRules
from serving.station.gate_changes import NeedsConfirmation
from serving.strict import error_lines

router = APIRouter(tags=["gate"])


@router.get("/api/gate", response_model=GateRules)
def get_gate(st=Depends(station)) -> GateRules:
    """The rules in force, with the thresholds actually used."""
    return st.rules


@router.put("/api/gate", response_model=GateRules,
            responses={409: {"description": "the change lets parts through: send it again with confirm: true"},
                       422: {"description": "a value is invalid or too far from the calibration"}})
def put_gate(change: GateChange, s: Session = Depends(require("engineer")), st=Depends(station)) -> GateRules:
    """Change some gate fields; the whole rule set is re-validated before it takes effect."""
    changes = change.model_dump(exclude_unset=True)
    confirm = bool(changes.pop("confirm", False))
    try:
        return st.update_gate(changes, s.user, confirm=confirm)
    except NeedsConfirmation as exc:
        raise HTTPException(409, str(exc)) from None
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(error_lines(exc, model=GateRules))) from None
