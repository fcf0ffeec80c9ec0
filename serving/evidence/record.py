"""The per-part inspection record: one typed object from the station to the pipeline.

The station builds it once per part; the evidence store derives its table columns from
these fields (and a numbered migration adds each new one); the API serves it through
response models; metrics count it; sync ships it as JSON lines with ``record_version``,
so the pipeline knows what it reads.

>>> rec = InspectionRecord(station_id="s1", seq=1, wall_time=0.0, t_trigger_ns=1, verdict="PASS", rule="anomaly.score")
>>> sorted(columns())[:4]
['actuation', 'area_px', 'boot_id', 'bundle_version']
>>> InspectionRecord.from_row(to_row(rec)) == rec
True
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

from serving.explanation import Explanation
from serving.gate.rules import Detection
from serving.strict import StrictModel

RECORD_VERSION = 5  #: bump with every field added; the store's migrations add the matching column
#: the record fields that name an encrypted image file of the part (retention, sync and sweeps handle them all)
IMAGE_FIELDS = ("crop_file", "overlay_file", "explain_file")


class ActuationOutcome(StrictModel):
    """What the actuator did with the part's verdict, and -- once it ran -- how its reject pulse really went."""

    scheduled: bool = False
    late: bool = False
    pulse_at_ns: int | None = None
    note: str = ""
    pulse_ok: bool | None = Field(None, description="None until the pulse ran; False if late, short or missed")
    start_error_ms: float | None = None
    width_ms: float | None = None


class InspectionRecord(StrictModel):
    """Everything known about one inspected part."""

    id: int | None = Field(None, description="row id in the station's evidence store")
    record_version: int = RECORD_VERSION
    station_id: str
    boot_id: str | None = Field(None, description="which run of the station (sequence numbers restart per run)")
    seq: int = Field(ge=0)
    source: str | None = None
    wall_time: float
    t_trigger_ns: int
    bundle_version: str | None = None
    score: float | None = None
    area_px: float | None = None
    verdict: Literal["PASS", "FAIL"]
    rule: str
    reasons: list[str] = []
    latency_ms: dict[str, float] = {}
    actuation: ActuationOutcome | None = None
    detections: list[Detection] = []
    class_name: str | None = Field(None, description="defect class: the detector's that decided, else its likeliest")
    embedding: list[float] | None = Field(None, description="the part's fingerprint (schema 2 bundles)")
    luminance: float | None = None
    color_balance: float | None = None
    sharpness: float | None = None
    stability_index: float | None = Field(None, description="the station's Stability Index after this part")
    capture_id: str | None = Field(None, description="a recalibration capture this part is a candidate normal of")
    explain: Explanation | None = Field(None, description="FAIL: the most anomalous region, the 3 normal patches it "
                                                          "was compared with, the nearest enrolled normal")
    crop_file: str | None = None
    overlay_file: str | None = None
    explain_file: str | None = Field(None, description="FAIL: heatmap | nearest normal | 3 normal patches (JPEG)")
    image_bytes: int = 0
    images_dropped: bool = False
    synced: bool = False
    disposition: Literal["false_alarm", "defect", "normal", "excluded"] | None = Field(
        None, description="operator: false_alarm / defect (review), normal / excluded (recalibration capture)")
    disposition_class: str | None = None
    disposition_user: str | None = None
    disposition_time: float | None = None

    @classmethod
    def from_row(cls, row: Mapping) -> "InspectionRecord":
        """Rebuild a record from a database row or synced JSON (JSON columns decoded, absent columns defaulted)."""
        data = {}
        for name in cls.model_fields:
            if name not in row.keys():
                continue
            value = row[name]
            if name in _json_fields() and isinstance(value, str):
                value = json.loads(value)
            data[name] = value
        return cls.model_validate(data)


def _json_fields() -> set[str]:
    return {n for n, f in InspectionRecord.model_fields.items() if n != "id" and _is_structured(f.annotation)}


def _members(annotation) -> list:
    """The non-None members of an optional/union annotation, or the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _is_structured(annotation) -> bool:
    return any(typing.get_origin(a) in (list, dict, tuple) or (isinstance(a, type) and issubclass(a, BaseModel))
               for a in _members(annotation))


def _sql_type(annotation) -> str:
    if _is_structured(annotation):
        return "TEXT"
    base = _members(annotation)[0]
    if typing.get_origin(base) is Literal:
        return "TEXT"
    return {bool: "INTEGER", int: "INTEGER", float: "REAL", str: "TEXT"}[base]


def columns() -> dict[str, str]:
    """Column name -> SQLite type for every record field but the row id."""
    return {n: _sql_type(f.annotation) for n, f in InspectionRecord.model_fields.items() if n != "id"}


def to_row(rec: InspectionRecord) -> dict:
    """The record as column values: structured fields as JSON text, booleans as 0/1."""
    data = rec.model_dump(mode="json", exclude={"id"})
    structured = _json_fields()
    return {k: json.dumps(v) if k in structured else int(v) if isinstance(v, bool) else v for k, v in data.items()}
