"""The running bundle, and swapping in a new one (engineer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import BundleRequest
from serving.errors import LineguardError

router = APIRouter(tags=["bundle"])


@router.get("/api/bundle")
def get_bundle(st=Depends(station)) -> dict:
    """The running bundle's manifest."""
    return st.engine.bundle.manifest.model_dump(mode="json", exclude={"thresholds": {"normal_scores"}})


@router.post("/api/bundle")
def load(body: BundleRequest, s: Session = Depends(require("engineer")), st=Depends(station)) -> dict:
    """Verify a bundle folder on the station and switch to it; a refused bundle leaves the old one running."""
    try:
        return {"ok": True, "bundle_version": st.reload_bundle(body.path, s.user)}
    except LineguardError as exc:
        raise HTTPException(409, f"{exc} (still running {st.engine.bundle.manifest.bundle_version})") from None
