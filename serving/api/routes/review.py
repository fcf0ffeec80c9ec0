"""The review queue: borderline and novel suspects, and the operator's dispositions."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, HTTPException

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import Ok, RecordId, ReviewItem, ReviewQueue, ReviewRequest

router = APIRouter(tags=["review"])


@router.get("/api/review", response_model=ReviewQueue)
def review(st=Depends(station)) -> ReviewQueue:
    """3-5 suspects: the closest to the threshold (borderline) and the highest scores (novel)."""
    thr = st.rules.image_threshold
    cands = st.evidence.query("disposition IS NULL AND overlay_file IS NOT NULL AND score IS NOT NULL "
                              "AND capture_id IS NULL", limit=500)
    distance = {c.id: abs(math.log(max(c.score, 1e-9) / max(thr, 1e-9))) for c in cands}
    borderline = sorted(cands, key=lambda c: distance[c.id])[:3]
    novel = sorted(cands, key=lambda c: -c.score)
    picks: list[ReviewItem] = []
    for c in [*borderline, *novel]:
        if c.id not in {p.id for p in picks} and len(picks) < st.cfg.api.review_size:
            picks.append(ReviewItem(id=c.id, seq=c.seq, wall_time=c.wall_time, score=c.score, verdict=c.verdict, rule=c.rule,
                                    kind="borderline" if c in borderline else "novel"))
    return ReviewQueue(threshold=thr, classes=st.engine.bundle.manifest.class_names + ["other"], items=picks)


@router.post("/api/review/{rid}", response_model=Ok)
def dispose(rid: RecordId, body: ReviewRequest, s: Session = Depends(require("operator")), st=Depends(station)) -> Ok:
    """Store an operator's decision on one part (audited)."""
    rec = st.evidence.get(rid)
    if rec is None or not st.evidence.set_disposition(rid, body.disposition, body.class_name, s.user):
        raise HTTPException(404, f"no evidence record {rid}")
    if body.disposition == "false_alarm" and rec.verdict == "FAIL":
        st.stability.false_alarm()  # a false reject: the Stability Index weighs it against the expected rate
    st.audit.append(s.user, "disposition", {"id": rid, **body.model_dump()})
    return Ok()
