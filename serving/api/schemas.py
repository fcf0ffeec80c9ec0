"""Request and response models of the station API (request bodies refuse unknown fields)."""

from __future__ import annotations

import copy
import typing
from typing import Literal

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from serving.gate.rules import GateRules
from serving.strict import StrictModel


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


#: A partial update of the gate: any subset of :class:`GateRules`' fields, each validated by type here and
#: by the whole rule set (cross-field checks included) when applied.
def _optional(f: FieldInfo) -> tuple:
    field = copy.copy(f)  # keeps the field's constraints (gt, ge, ...) and description
    field.default = None
    return typing.Optional[f.annotation], field  # noqa: UP045


GateChange = create_model("GateChange", __base__=StrictModel,
                          **{name: _optional(f) for name, f in GateRules.model_fields.items()})


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
    has_view: bool = False


class AlarmView(BaseModel):
    """One alarm on the page: a state alarm lasts while its cause does, an event alarm until acknowledged."""

    name: str
    message: str
    level: str
    count: int
    kind: str
    since: float
    acked_by: str | None


class StateResponse(BaseModel):
    """Everything the operator page polls."""

    station_id: str
    status_level: Literal["ok", "warn", "stop"]
    status_text: str
    actuator_kind: str
    user: str
    role: str
    bundle_version: str
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


class ReviewItem(BaseModel):
    """One suspect awaiting review."""

    id: int
    seq: int
    wall_time: float
    score: float
    verdict: str
    rule: str
    kind: Literal["borderline", "novel"]


class ReviewQueue(BaseModel):
    """The suspects to review now, with the class list."""

    threshold: float
    classes: list[str]
    items: list[ReviewItem]


class Ok(BaseModel):
    """A plain acknowledgement."""

    ok: bool = True
