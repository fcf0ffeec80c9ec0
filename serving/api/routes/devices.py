"""Per-device API keys for the HTTP trigger (engineer): list, create (shown once), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import Field

from serving.api.auth import Session
from serving.api.deps import require
from serving.strict import StrictModel

router = APIRouter(tags=["devices"], dependencies=[Depends(require("engineer"))])


class DeviceKeyRequest(StrictModel):
    """A device that may trigger captures."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


@router.get("/api/device-keys")
def listing(request: Request) -> list[dict]:
    """Devices with a key (names, creators, times; never the keys)."""
    return request.app.state.device_keys.listing()


@router.post("/api/device-keys")
def create(body: DeviceKeyRequest, request: Request, s: Session = Depends(require("engineer"))) -> dict:
    """A new trigger-only key for a device; the key is in this answer and nowhere else."""
    key = request.app.state.device_keys.create(body.name, s.user)
    request.app.state.station.audit.append(s.user, "device_key_created", {"device": body.name, "scope": "trigger"})
    return {"name": body.name, "key": key, "scope": "trigger", "header": "X-Device-Key"}


@router.delete("/api/device-keys/{name}")
def revoke(name: str, request: Request, s: Session = Depends(require("engineer"))) -> dict:
    """Revoke a device's key at once."""
    if not request.app.state.device_keys.revoke(name):
        raise HTTPException(404, f"no device key named {name!r}")
    request.app.state.station.audit.append(s.user, "device_key_revoked", {"device": name})
    return {"ok": True}
