"""The review queue: borderline and novel suspects, and the operator's dispositions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from serving.api.auth import Session
from serving.api.deps import require, station
from serving.api.schemas import Ok, RecordId, ReviewItem, ReviewQueue, ReviewRequest
from serving.station.review_queue import pick

router = APIRouter(tags=["review"])


@router.get("/api/review", response_model=ReviewQueue)
def review(st=Depends(station)) -> ReviewQueue:
    """3-5 suspects: borderline scores and novel-looking parts (see serving.station.review_queue)."""
    thr = st.rules.image_threshold
    cands = st.evidence.query("disposition IS NULL AND overlay_file IS NOT NULL AND score IS NOT NULL "
                              "AND capture_id IS NULL", limit=500)
    reviewed = st.evidence.query("disposition IS NOT NULL AND embedding IS NOT NULL", limit=2000)
    m = st.engine.bundle.manifest
    spread = m.baseline.embedding_spread if m.baseline else 0.0
    picks = pick(cands, reviewed, thr, m.thresholds.normal_image_scores.p95, st.known_fingerprints(), spread,
                 st.cfg.api.review_size)
    items = [ReviewItem(id=p.record.id, seq=p.record.seq, wall_time=p.record.wall_time, score=p.record.score,
                        verdict=p.record.verdict, rule=p.record.rule, kind=p.kind, how=round(p.how, 3),
                        class_name=p.record.class_name) for p in picks]
    return ReviewQueue(threshold=thr, classes=[*st.classes(), "other"], items=items)


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
