"""Why a FAIL failed: its explanation, and its side-by-side picture (heatmap | nearest normal | 3 normal patches)
whole or one panel at a time, for the live part and for any kept record."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from serving.api.deps import station
from serving.api.schemas import RecordId
from serving.engine.explain_picture import panel_jpeg
from serving.errors import LineguardError
from serving.explanation import Explanation

router = APIRouter(tags=["explain"])

#: ``picture``: the whole; ``patches``: the three normal patch crops side by side
Panel = Literal["picture", "overlay", "normal", "patches", "patch1", "patch2", "patch3"]


@router.get("/api/explain/live/{panel}.jpg", response_class=Response)
def live(panel: Panel, st=Depends(station)) -> Response:
    """A panel of the last inspected part's explanation (FAIL parts only)."""
    view, rec = st.state.last_view, st.state.last
    try:
        if view is None or rec is None:
            raise LookupError("no inspected part to show yet")
        data = view.explain_jpeg(panel)
    except LookupError as exc:
        raise HTTPException(404, f"{exc}; only FAIL parts are explained") from None
    return Response(data, media_type="image/jpeg", headers={"X-Part-Seq": str(rec.seq)})


def _explained(st, rid: int):
    rec = st.evidence.get(rid)
    if rec is None:
        raise HTTPException(404, f"no evidence record {rid}")
    if rec.explain is None:
        raise HTTPException(404, f"record {rid} ({rec.verdict}) has no explanation: only FAIL parts the model "
                                 "rejected are explained")
    return rec


@router.get("/api/explain/{rid}/{panel}.jpg", response_class=Response)
def picture(rid: RecordId, panel: Panel, st=Depends(station)) -> Response:
    """A panel of one record's stored explanation picture (decrypted)."""
    rec = _explained(st, rid)
    if not rec.explain_file:
        raise HTTPException(404, f"record {rid}: its explanation picture is gone (dropped by the evidence quota or "
                                 "never written); the explanation itself is at /api/explain/{rid}")
    try:
        data = st.evidence.read_image(rec.explain_file)
    except LineguardError as exc:
        raise HTTPException(503, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - altered, missing or under another key: say so, never a 500
        raise HTTPException(503, f"record {rid}: explanation picture {rec.explain_file} cannot be read "
                                 f"({type(exc).__name__})") from None
    try:
        return Response(panel_jpeg(data, rec.explain, panel), media_type="image/jpeg")
    except (ValueError, KeyError) as exc:
        raise HTTPException(503, f"record {rid}: explanation picture unusable ({exc})") from None


@router.get("/api/explain/{rid}", response_model=Explanation)
def explanation(rid: RecordId, st=Depends(station)) -> Explanation:
    """One record's explanation: region, the 3 normal patches (image, place, boxes), nearest normal."""
    return _explained(st, rid).explain
