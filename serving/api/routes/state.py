"""The live state the operator page polls."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.api.auth import Session
from serving.api.deps import current_session, station
from serving.api.schemas import AlarmView, ComponentView, PartView, StabilityView, StateResponse, SyncView

router = APIRouter(tags=["state"])


@router.get("/api/state", response_model=StateResponse)
def state(s: Session = Depends(current_session), st=Depends(station)) -> StateResponse:
    """Verdict of the last part, counts, alarms, PLC and sync state."""
    live, last = st.state, st.state.last
    level, text = st.status()
    return StateResponse(
        station_id=st.cfg.station_id, demo=st.cfg.api.demo, status_level=level, status_text=text, actuator_kind=st.cfg.actuator.kind,
        user=s.user, role=s.role,
        bundle_version=st.engine.bundle.manifest.bundle_version, threshold=st.rules.image_threshold,
        bundle_signer=st.engine.bundle.signature.signer, bundle_unsigned=not st.engine.bundle.signature.signed,
        last=None if last is None else PartView(**last.model_dump(include=set(PartView.model_fields) - {"has_view"}),
                                                has_view=live.last_view is not None),
        counts=live.counts, frames=live.frames, dropped=st.source.dropped, late=st.source.late,
        actuation=st.actuator.counts, plc_connected=st.actuator.connected, plc_state=st.plc_state(),
        heartbeat=st.actuator.link.heartbeat, ack_latency_ms=st.actuator.link.ack_latency_ms,
        stop_line=st.actuator.link.stop_line_latched, unseen=st.source.unseen, online=st.housekeeper.online,
        sync_configured=st.cfg.evidence.sync_url is not None,
        running=live.running, finished=live.finished,
        alarms=[AlarmView(name=a.name, message=a.message, level=a.level, count=a.count, kind=a.kind, since=a.since,
                          acked_by=a.acked_by) for a in st.alarms.active()],
        reviewed=st.evidence.reviewed(), stability=stability_view(st),
        sync=SyncView(**vars(st.housekeeper.status())),
    )


def stability_view(st) -> StabilityView:
    """The monitor's last report, with the overrides as an observed false-reject rate."""
    mon, rep = st.stability, st.stability.report
    b = mon.baseline
    observed = rep.false_alarms / rep.parts if rep.parts else None
    return StabilityView(
        available=b is not None, index=rep.index if b is not None else None, alert=mon.alert, moving=rep.moving,
        components=[ComponentView(name=c.name, score=round(c.score, 1), detail=c.detail) for c in rep.components.values()],
        parts=rep.parts, frr_expected=b.frr_expected if b else None, frr_interval=b.frr_interval if b else None,
        frr_observed=observed)
