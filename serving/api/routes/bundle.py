"""The running bundles, and changing them (engineer): a path on the station, an upload, or a rollback.

Every way in goes through the same checks (:mod:`serving.station.bundle_control`): signature, paths,
hashes, smoke test on the stored normals, a verdict on the last part; a refused bundle leaves the old
one running and answers 409 with the reason.
"""

from __future__ import annotations

import tempfile

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import BundleRequest, BundleSwitch, RollbackRequest
from serving.errors import LineguardError

router = APIRouter(tags=["bundle"])


@router.get("/api/bundle")
def get_bundle(st=Depends(station)) -> dict:
    """The running anomaly bundle's manifest, its signature, and the versions kept for rollback."""
    b = st.engine.bundle
    out = b.manifest.model_dump(mode="json", exclude={"thresholds": {"normal_scores"}})
    out["signature"] = {"signed": b.signature.signed, "signer": b.signature.signer, "key_id": b.signature.key_id}
    out["history"] = {k: st.store.history(k) for k in ("anomaly", "detector")}
    out["detector_version"] = st.detector.bundle.manifest.bundle_version if st.detector else None
    return out


def _switched(st, kind: str, version: str) -> BundleSwitch:
    b = st.running(kind)
    return BundleSwitch(ok=True, kind=kind, bundle_version=version, signature=b.signature.describe(),
                        history=st.store.history(kind))


def _refused(st, exc: LineguardError) -> HTTPException:
    return HTTPException(409, f"{exc} (still running {st.engine.bundle.manifest.bundle_version})")


@router.post("/api/bundle", response_model=BundleSwitch)
def load(body: BundleRequest, s: Session = Depends(require("engineer")), st=Depends(station)) -> BundleSwitch:
    """Verify a bundle folder on the station and switch to it."""
    try:
        version = st.reload_bundle(body.path, s.user)
    except LineguardError as exc:
        raise _refused(st, exc) from None
    return _switched(st, st.store.kind_of(version), version)


@router.post("/api/bundle/upload", response_model=BundleSwitch)
async def upload(request: Request, s: Session = Depends(require("engineer")), st=Depends(station)) -> BundleSwitch:
    """A bundle as a tar(.gz) body (``tar -czf - -C BUNDLE .``): unpacked, verified, tried out, switched to."""
    limit = int(st.cfg.bundles.max_upload_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"bundle upload of {int(declared) / 2**20:.0f} MB is over bundles.max_upload_mb")
    # spooled to disk as it arrives: a large upload never sits in memory
    with tempfile.SpooledTemporaryFile(max_size=8 << 20, dir=st.store.root / "staging") as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, "bundle upload is over bundles.max_upload_mb")
            spool.write(chunk)
        spool.seek(0)
        try:
            version = await run_in_threadpool(st.install_upload, spool, s.user)
        except LineguardError as exc:
            raise _refused(st, exc) from None
    return _switched(st, st.store.kind_of(version), version)


@router.post("/api/bundle/rollback", response_model=BundleSwitch)
def rollback(body: RollbackRequest, s: Session = Depends(require("engineer")), st=Depends(station)) -> BundleSwitch:
    """Return to the version that ran before the current one (audited as a rollback)."""
    try:
        version = st.rollback_bundle(s.user, body.kind)
    except LineguardError as exc:
        raise _refused(st, exc) from None
    return _switched(st, body.kind, version)
