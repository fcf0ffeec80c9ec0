"""Setup mode's constants, its error, the checklist's steps and the request/response models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from serving.errors import LineguardError
from serving.strict import StrictModel

CHECKLIST_FILE = "setup-checklist.json"
BASELINES = "baselines"
HIST_BINS = 32
CLIPPED = (5, 250)  #: grey levels at or beyond which a pixel counts as crushed black / saturated white
CLIP_LIMIT = 0.02  #: more than this fraction of clipped pixels loses detail where defects would show
FRAME_MAX_PX = 1024  #: the live frame is sent at most this large on its long side
POLL_S = 0.02  #: how often a baseline capture looks for a new part (a line runs at most ~20 parts/s)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class SetupError(LineguardError):
    """A setup step cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Step:
    """One item of the commissioning checklist (docs/setup.md has a section per item)."""

    id: str
    title: str
    done_when: str


CHECKLIST = (
    Step("camera", "Camera mounted, focused and lit",
         "the focus figure peaks and holds; the histogram has no clipping warning"),
    Step("roi", "ROI drawn and saved", "the ROI covers the part with a margin and nothing that varies between "
                                       "good parts; saved to the config"),
    Step("baseline", "Baseline of 50-200 normal images captured", "the baseline folder holds 50-200 PNGs of good "
                                                                  "parts, checked by eye"),
    Step("enroll", "Initial enrollment deployed with a conservative threshold",
         "the new bundle runs on the station; its version shows in the header"),
    Step("signal", "Signal test with a known defect", "the signal test is green: a FAIL and its reject pulse, and the "
                                                      "part is in the reject bin"),
    Step("safeguards", "Drift safeguards and offline buffer checked",
         "the Stability Index shows; with the network cut the backlog grows, and drains when it is back"),
    Step("training", "Operators trained", "each operator has reviewed suspects with P / F and acknowledged an alarm"),
)
STEP_IDS = tuple(s.id for s in CHECKLIST)


# ------------------------------------------------------------------ request and response models
class RoiRequest(StrictModel):
    """The ROI to save: ``x,y,w,h`` in source-image pixels, or null for the bundle's own ROI."""

    roi: str | None = Field(max_length=64, pattern=r"^\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*$",
                            description="x,y,w,h in pixels of the camera frame; null: the bundle's ROI")


class BaselineRequest(StrictModel):
    """Save the next ``count`` frames into ``<data>/baselines/<name>/train/good``."""

    name: str = Field(pattern=NAME_PATTERN, description="folder name: letters, digits, '.', '_' or '-'")
    count: int = Field(100, ge=1, le=1000, description="frames to save (50-200 for an enrollment)")


class ChecklistChange(StrictModel):
    """Tick or untick one checklist item, with an optional note (what was checked, a figure)."""

    done: bool
    note: str = Field("", max_length=500)


class ItemState(StrictModel):
    """One ticked (or unticked) checklist item as it is stored."""

    done: bool = False
    by: str | None = None
    at: float | None = None
    note: str = ""


class ChecklistFile(StrictModel):
    """``setup-checklist.json``."""

    version: Literal[1] = 1
    items: dict[str, ItemState] = {}


class LiveFigures(BaseModel):
    """The latest frame as the camera step sees it."""

    seq: int
    wall_time: float
    verdict: str
    frame_w: int
    frame_h: int
    region: Literal["roi", "frame"] = Field(description="what the figures cover")
    focus: float = Field(description="variance of the Laplacian of the region at full resolution, brightness-free")
    luminance: float
    histogram: list[int] = Field(description=f"{HIST_BINS} bins of grey level 0-255 over the region")
    dark_fraction: float
    bright_fraction: float
    exposure: Literal["ok", "dark", "bright", "clipped_dark", "clipped_bright"]
    exposure_hint: str
    model_sharpness: float | None = Field(description="the part's sharpness as the model sees it (its record)")
    baseline_sharpness: float | None = Field(description="median sharpness of the enrolled normals")
    baseline_luminance: float | None


class BaselineStatus(BaseModel):
    """A baseline capture: where, how far, and the command that enrolls from it."""

    name: str
    folder: str
    target: int
    saved: int
    skipped: int
    done: bool
    stopped: bool
    error: str | None
    started_by: str
    started_at: float
    enroll_command: str


class SignalStatus(BaseModel):
    """The signal test: a FAIL on the part's merits, then that part's reject pulse, both after ``started_at``."""

    started_by: str
    started_at: float
    after_seq: int
    fail_seq: int | None = None
    fail_rule: str | None = None
    fail_score: float | None = None
    pulse_seq: int | None = None
    pulse_start_error_ms: float | None = None
    pulse_width_ms: float | None = None
    pulse_problem: str | None = None
    pulse_observable: bool
    passed: bool = False
    passed_at: float | None = None
    note: str


class ChecklistItemView(BaseModel):
    """A checklist item with its state."""

    id: str
    title: str
    done_when: str
    done: bool
    by: str | None
    at: float | None
    note: str
