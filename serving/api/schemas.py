"""Request and response models of the station API (request bodies refuse unknown fields)."""

from __future__ import annotations

import copy
import typing
from typing import Annotated, Literal

from fastapi import Path as PathParam

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from serving.explanation import Explanation
from serving.gate.rules import Detection, GateRules
from serving.strict import StrictModel


#: an evidence record id in a URL: SQLite's integer range, so a huge number is a 422, never a 500
RecordId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="evidence record id")]
#: the same range inside a request body
BodyRecordId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class LoginRequest(StrictModel):
    """Login request."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class LoginResponse(BaseModel):
    """A bearer token for the user, with their role."""

    token: str
    role: str
    user: str


class ReviewRequest(StrictModel):
    """An operator's disposition of one part."""

    disposition: Literal["false_alarm", "defect"]
    class_name: str | None = Field(None, min_length=1, max_length=64)


class BundleRequest(StrictModel):
    """Path of a bundle folder on the station."""

    path: str = Field(min_length=1, max_length=4096)


class RollbackRequest(StrictModel):
    """Which bundle to roll back."""

    kind: Literal["anomaly", "detector"] = "anomaly"


class BundleSwitch(BaseModel):
    """The bundle a station switched to."""

    ok: bool
    kind: str
    bundle_version: str
    signature: str
    history: list[str] = Field(description="versions that ran here, oldest first; the last one runs now")


#: A partial update of the gate: any subset of :class:`GateRules`' fields, each validated by type here and
#: by the whole rule set (cross-field checks included) when applied.
def _optional(f: FieldInfo) -> tuple:
    field = copy.copy(f)  # keeps the field's constraints (gt, ge, ...) and description
    field.default = None
    return typing.Optional[f.annotation], field  # noqa: UP045


GateChange = create_model("GateChange", __base__=StrictModel,
                          **{name: _optional(f) for name, f in GateRules.model_fields.items()},
                          confirm=(bool, Field(False, description="needed for a change that lets parts through: "
                                                                  "on_error pass, a pass_all SOP rule, a threshold "
                                                                  "far above the calibration (audited)")))


class SessionView(BaseModel):
    """A user's live sessions (never the tokens)."""

    user: str
    role: str
    sessions: int
    expires: float = Field(description="when the last of them expires (Unix time)")


class Revoked(BaseModel):
    """How many sessions a revocation ended."""

    user: str
    revoked: int


class PartView(BaseModel):
    """The last inspected part, as the page shows it."""

    id: int | None
    seq: int
    verdict: str
    rule: str
    score: float | None
    area_px: float | None
    reasons: list[str]
    source: str | None
    wall_time: float
    class_name: str | None = None
    detections: list[Detection] = []
    explain: Explanation | None = Field(None, description="FAIL: why (pictures at /api/explain/live/{panel}.jpg)")
    has_view: bool = False


class ComponentView(BaseModel):
    """One component of the Stability Index."""

    name: str
    score: float
    detail: str


class StabilityView(BaseModel):
    """The Stability Index, what moves it, and the false-reject rate against its calibration."""

    available: bool
    index: float | None
    alert: bool
    moving: str | None
    components: list[ComponentView]
    parts: int
    frr_expected: float | None
    frr_interval: tuple[float, float] | None
    frr_observed: float | None


class CandidateView(BaseModel):
    """One part of a recalibration capture."""

    id: int
    seq: int
    score: float | None
    flagged: bool = Field(description="stands out from the capture and scores above the threshold: look again")
    disposition: str | None


class CaptureView(BaseModel):
    """A recalibration capture and its candidate normals."""

    id: str
    started_by: str
    started_at: float
    target_parts: int | None
    until: float | None
    count: int
    done: bool
    confirmed_by: str | None
    threshold: float
    candidates: list[CandidateView]


class ConfirmRequest(StrictModel):
    """Confirm a capture's parts as normal: all of them, less ``exclude``; flagged ones only if in ``include_flagged``."""

    exclude: list[BodyRecordId] = Field([], max_length=20_000)
    include_flagged: list[BodyRecordId] = Field([], max_length=20_000)


class ConfirmResult(BaseModel):
    """What a confirmation did."""

    id: str
    normal: int
    excluded: int


class AlarmView(BaseModel):
    """One alarm on the page: a state alarm lasts while its cause does, an event alarm until acknowledged."""

    name: str
    message: str
    level: str
    count: int
    kind: str
    since: float
    acked_by: str | None


class SyncView(BaseModel):
    """Evidence sync as the page shows it: where to, online or not, and how far behind."""

    target: str | None = Field(description="the sync URL without credentials; null when no sync is configured")
    online: bool = Field(description="the last sync round reached the target")
    backlog_records: int = Field(description="records not yet in the target")
    backlog_bytes: int = Field(description="their images and record data (estimated)")
    oldest_unsynced_age_s: float | None = Field(description="age of the oldest change not yet in the target")
    last_sync_at: float | None = Field(description="wall time (epoch s) of the last sync that reached the target")


class StateResponse(BaseModel):
    """Everything the operator page polls."""

    station_id: str
    demo: bool = Field(False, description="a demo station (api.demo): demo passwords allowed; the page says so")
    status_level: Literal["ok", "warn", "stop"]
    status_text: str
    actuator_kind: str
    user: str
    role: str
    bundle_version: str
    bundle_signer: str | None = Field(None, description="who signed the running bundle")
    bundle_unsigned: bool = Field(False, description="running an unsigned bundle (bundles.allow_unsigned)")
    threshold: float
    last: PartView | None
    counts: dict[str, int]
    frames: int
    dropped: int
    late: int
    actuation: dict[str, int]
    plc_connected: bool
    plc_state: int
    heartbeat: int
    ack_latency_ms: float | None
    stop_line: bool
    unseen: int
    online: bool
    sync_configured: bool
    running: bool
    finished: bool
    alarms: list[AlarmView]
    reviewed: int
    stability: StabilityView
    sync: SyncView | None = Field(None, description="evidence sync status and backlog")


class ReviewItem(BaseModel):
    """One suspect awaiting review."""

    id: int
    seq: int
    wall_time: float
    score: float
    verdict: str
    rule: str
    kind: Literal["borderline", "novel"]
    how: float = Field(0.0, description="borderline: distance to the threshold in band half-widths; novel: "
                                        "spreads from the nearest enrolled or reviewed part")
    class_name: str | None = None


class ReviewQueue(BaseModel):
    """The suspects to review now, with the class list."""

    threshold: float
    classes: list[str]
    items: list[ReviewItem]


class Ok(BaseModel):
    """A plain acknowledgement."""

    ok: bool = True
