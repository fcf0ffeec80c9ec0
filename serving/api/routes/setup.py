"""Setup mode: the commissioning page and its API (reads for any logged-in user, changes for engineers).

    GET  /setup                          the setup page (it logs in through the API)        public
    GET  /api/setup                      checklist, ROI, baseline, signal test, safeguards
    GET  /api/setup/live                 focus figure and exposure histogram of the latest frame
    GET  /api/setup/frame.png            the latest whole camera frame (for drawing the ROI)
    PUT  /api/setup/roi                  {roi: "x,y,w,h" | null}: save to the config, apply   (engineer)
    POST /api/setup/baseline             {name, count}: save the next frames as PNGs           (engineer)
    POST /api/setup/baseline/stop        end the baseline capture                              (engineer)
    POST /api/setup/signal-test          (re)start the signal test                             (engineer)
    PUT  /api/setup/checklist/{item}     {done, note}: tick or untick an item                  (engineer)
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from serving.api.auth import Session, allowed
from serving.api.deps import current_session, require, station
from serving.api.routes.ops import STATIC
from serving.errors import LineguardError, RoiError
from serving.station.setup import (STEP_IDS, BaselineRequest, BaselineStatus, ChecklistChange, ChecklistItemView,
                                   LiveFigures, RoiRequest, SetupError, SetupMode, SignalStatus, frame_png,
                                   live_figures)

router = APIRouter(tags=["setup"])
_create = threading.Lock()


class Safeguards(BaseModel):
    """What the drift and offline-buffer step checks."""

    stability_available: bool
    stability_index: float | None
    stability_alert: bool
    stability_moving: str | None
    alert_below: float
    sync_configured: bool
    online: bool
    backlog: int
    backlog_mb: float
    backlog_age_s: float | None
    quota_mb: float
    actuator_kind: str
    plc_connected: bool


class SetupView(BaseModel):
    """Everything the setup page shows besides the live frame."""

    station_id: str
    user: str
    role: str
    can_edit: bool
    bundle_version: str
    threshold: float
    config_file: str | None
    roi: str | None
    roi_from: str
    roi_min_px: tuple[int, int]
    data_dir: str
    checklist: list[ChecklistItemView]
    checklist_error: str | None
    baseline: BaselineStatus | None
    signal: SignalStatus | None
    safeguards: Safeguards


def setup_mode(request: Request) -> SetupMode:
    """The station's setup mode, made on first use."""
    app = request.app
    with _create:
        if getattr(app.state, "setup_mode", None) is None:
            app.state.setup_mode = SetupMode(app.state.station)
    return app.state.setup_mode


def _conflict(exc: LineguardError) -> HTTPException:
    return HTTPException(422 if isinstance(exc, RoiError) else 409, str(exc))


@router.get("/setup", response_class=HTMLResponse)
def page() -> str:
    """The setup page (engineer; it logs in through the API)."""
    return (STATIC / "setup.html").read_text()


@router.get("/api/setup", response_model=SetupView)
def overview(s: Session = Depends(current_session), sm: SetupMode = Depends(setup_mode), st=Depends(station)) -> SetupView:
    """The setup checklist and each step's state."""
    try:
        items, error = sm.checklist.items(), None
    except SetupError as exc:
        items, error = [], str(exc)
    roi, roi_from = sm.roi()
    spec, mon, sync = st.engine.spec, st.stability, st.housekeeper.status()  # as of its last round: no query
    rep = mon.report
    return SetupView(
        station_id=st.cfg.station_id, user=s.user, role=s.role, can_edit=allowed(s.role, "engineer"),
        bundle_version=st.engine.bundle.manifest.bundle_version, threshold=st.rules.image_threshold,
        config_file=str(sm.config_file) if sm.config_file else None, roi=roi, roi_from=roi_from,
        roi_min_px=(-(-spec.width // 4), -(-spec.height // 4)), data_dir=str(sm.data_dir),
        checklist=items, checklist_error=error,
        baseline=sm.baseline.status() if sm.baseline else None,
        signal=sm.signal.status() if sm.signal else None,
        safeguards=Safeguards(
            stability_available=mon.baseline is not None, stability_index=rep.index if mon.baseline else None,
            stability_alert=mon.alert, stability_moving=rep.moving, alert_below=st.cfg.stability.alert_below,
            sync_configured=st.cfg.evidence.sync_url is not None, online=sync.online, backlog=sync.backlog_records,
            backlog_mb=round(sync.backlog_bytes / 2**20, 1), backlog_age_s=sync.oldest_unsynced_age_s,
            quota_mb=st.cfg.evidence.quota_mb,
            actuator_kind=st.cfg.actuator.kind, plc_connected=st.actuator.connected))


@router.get("/api/setup/live", response_model=LiveFigures)
def live(sm: SetupMode = Depends(setup_mode)) -> LiveFigures:
    """Focus figure and exposure histogram of the latest frame (of its ROI when one is set)."""
    try:
        figures = live_figures(sm.latest())
    except LineguardError as exc:
        raise HTTPException(409, str(exc)) from None
    if figures is None:
        raise HTTPException(404, "no frame yet: the station has not inspected a part with a picture")
    return figures


@router.get("/api/setup/frame.png", response_class=Response)
def frame(sm: SetupMode = Depends(setup_mode)) -> Response:
    """The latest whole camera frame; X-Frame-Width/Height give its real size (it may be sent smaller)."""
    try:
        got = frame_png(sm.latest())
    except LineguardError as exc:
        raise HTTPException(409, str(exc)) from None
    if got is None:
        raise HTTPException(404, "no frame yet: the station has not inspected a part with a picture")
    png, seq, w, h = got
    return Response(png, media_type="image/png",
                    headers={"X-Part-Seq": str(seq), "X-Frame-Width": str(w), "X-Frame-Height": str(h)})


@router.put("/api/setup/roi")
def put_roi(body: RoiRequest, s: Session = Depends(require("engineer")), sm: SetupMode = Depends(setup_mode)) -> dict:
    """Save the ROI into the station's config file and use it from the next part on (audited)."""
    try:
        saved = sm.save_roi(body.roi, s.user)
    except LineguardError as exc:
        raise _conflict(exc) from None
    return {"roi": saved, "config_file": str(sm.config_file), "applies": "from the next part"}


@router.post("/api/setup/baseline", response_model=BaselineStatus)
def start_baseline(body: BaselineRequest, s: Session = Depends(require("engineer")),
                   sm: SetupMode = Depends(setup_mode)) -> BaselineStatus:
    """Save the next ``count`` frames as PNG files into ``<data>/baselines/<name>/train/good``."""
    try:
        return sm.start_baseline(body, s.user).status()
    except LineguardError as exc:
        raise _conflict(exc) from None


@router.post("/api/setup/baseline/stop", response_model=BaselineStatus)
def stop_baseline(s: Session = Depends(require("engineer")), sm: SetupMode = Depends(setup_mode)) -> BaselineStatus:
    """End the baseline capture now; the frames saved so far stay."""
    try:
        return sm.stop_baseline(s.user).status()
    except LineguardError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/api/setup/signal-test", response_model=SignalStatus)
def signal_test(s: Session = Depends(require("engineer")), sm: SetupMode = Depends(setup_mode)) -> SignalStatus:
    """(Re)start the signal test: it passes on a FAIL and its reject pulse, both from now on."""
    return sm.start_signal_test(s.user).status()


@router.put("/api/setup/checklist/{item}", response_model=list[ChecklistItemView])
def tick(item: str, body: ChecklistChange, s: Session = Depends(require("engineer")),
         sm: SetupMode = Depends(setup_mode)) -> list[ChecklistItemView]:
    """Tick or untick one checklist item (saved beside the audit log, audited)."""
    if item not in STEP_IDS:
        raise HTTPException(404, f"no checklist item {item!r}; the items are {', '.join(STEP_IDS)}")
    try:
        return sm.checklist.set(item, body, s.user)
    except LineguardError as exc:
        raise HTTPException(409, str(exc)) from None
