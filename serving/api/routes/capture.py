"""Recalibration captures: start one, watch it fill, confirm its parts as normal (bulk, with exclusions)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import CandidateView, CaptureView, ConfirmRequest, ConfirmResult
from serving.drift.capture import CaptureRequest, flag_outliers
from serving.errors import LineguardError

router = APIRouter(tags=["capture"])


def capture_view(st, with_candidates: bool = True) -> CaptureView | None:
    """The current (or last) capture and its candidates, flagged where they need a second look."""
    cap = st.capture
    if cap is None:
        return None
    if with_candidates and cap.done:
        st.after.flush(10.0)  # its last parts may still be on their way to the evidence store
    cands = st.evidence.query("capture_id=?", (cap.id,), limit=20_000, order="id") if with_candidates else []
    thr = st.rules.image_threshold
    flags = flag_outliers([c.score for c in cands], thr)
    return CaptureView(
        id=cap.id, started_by=cap.started_by, started_at=cap.started_at, target_parts=cap.target_parts, until=cap.until,
        count=cap.count, done=cap.done, confirmed_by=cap.confirmed_by, threshold=thr,
        candidates=[CandidateView(id=c.id, seq=c.seq, score=c.score, flagged=f, disposition=c.disposition)
                    for c, f in zip(cands, flags)])


@router.get("/api/capture", response_model=CaptureView | None)
def get_capture(st=Depends(station)) -> CaptureView | None:
    """The current or last capture (null when none was started since the station started)."""
    return capture_view(st)


@router.post("/api/capture", response_model=CaptureView)
def start(body: CaptureRequest, s: Session = Depends(require("operator")), st=Depends(station)) -> CaptureView:
    """Start keeping the next parts as candidate normals."""
    try:
        st.normals.start_capture(body, s.user)
    except LineguardError as exc:
        raise HTTPException(409, str(exc)) from None
    return capture_view(st, with_candidates=False)


@router.post("/api/capture/stop", response_model=CaptureView)
def stop(s: Session = Depends(require("operator")), st=Depends(station)) -> CaptureView:
    """End the running capture now."""
    if st.normals.stop_capture(s.user) is None:
        raise HTTPException(404, "no capture was started")
    return capture_view(st)


@router.post("/api/capture/{cid}/confirm", response_model=ConfirmResult)
def confirm(cid: str, body: ConfirmRequest, s: Session = Depends(require("operator")), st=Depends(station)) -> ConfirmResult:
    """Every candidate becomes ``normal`` except the excluded ones, and the flagged ones not explicitly included."""
    view = capture_view(st)
    if view is None or view.id != cid:
        raise HTTPException(404, f"no capture {cid} on this station")
    if not view.done:
        raise HTTPException(409, f"capture {cid} is still running ({view.count} parts); stop it or let it finish")
    ids = {c.id for c in view.candidates}
    unknown = sorted((set(body.exclude) | set(body.include_flagged)) - ids)
    if unknown:
        raise HTTPException(422, f"records {unknown} are not candidates of capture {cid}")
    normal, excluded = [], []
    for c in view.candidates:
        keep = c.id not in body.exclude and (not c.flagged or c.id in body.include_flagged)
        (normal if keep else excluded).append(c.id)
    for rid in normal:
        st.evidence.set_disposition(rid, "normal", None, s.user)
    for rid in excluded:
        st.evidence.set_disposition(rid, "excluded", None, s.user)
    st.capture.confirmed_by = s.user
    st.audit.append(s.user, "capture_confirmed", {"id": cid, "normal": len(normal), "excluded": excluded})
    st.alarms.clear("capture")
    return ConfirmResult(id=cid, normal=len(normal), excluded=len(excluded))
