"""Decrypted evidence images, for logged-in users."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from serving.api.schemas import RecordId
from serving.api.deps import station
from serving.errors import LineguardError
from serving.evidence.crypto import ImageUnreadable

router = APIRouter(tags=["evidence"])


@router.get("/api/live/{kind}.png", response_class=Response)
def live(kind: Literal["crop", "overlay"], st=Depends(station)) -> Response:
    """The last inspected part's crop or heatmap, whether or not its evidence is kept."""
    view, rec = st.state.last_view, st.state.last
    if view is None or rec is None:
        raise HTTPException(404, "no inspected part to show yet (or the last one failed before the engine)")
    return Response(view.png(kind), media_type="image/png", headers={"X-Part-Seq": str(rec.seq)})


@router.get("/api/evidence/{rid}/{kind}.png", response_class=Response)
def image(rid: RecordId, kind: Literal["crop", "overlay"], st=Depends(station)) -> Response:
    """The ROI crop or the heatmap overlay of one record."""
    rec = st.evidence.get(rid)
    name = rec and getattr(rec, f"{kind}_file")
    if not name:
        raise HTTPException(404, f"record {rid} has no {kind} image (PASS frames are sampled)")
    try:
        return Response(st.evidence.read_image(name), media_type="image/png")
    except ImageUnreadable as exc:  # gone, altered or under another key: it will not come back (not a 500)
        raise HTTPException(410, f"record {rid}: {exc}") from None
    except LineguardError as exc:  # no key on the station: may come back when the key is restored
        raise HTTPException(503, str(exc)) from None
