"""Setup mode: what an engineer needs to commission a station, computed from the running station.

The setup page (``/setup``) walks the checklist of ``docs/setup.md``:

- **camera**: the latest frame with a focus figure (variance of the Laplacian, brightness-free) and an
  exposure histogram of the ROI (or of the whole frame when there is none);
- **ROI**: saved into the station's config file (only its ``roi:`` line changes; comments and every
  other key stay as they were) and applied from the next part;
- **baseline**: the next N frames as PNG files in ``<data>/baselines/<name>/train/good``, the layout
  ``lineguard enroll --data <data>/baselines/<name>`` reads;
- **signal test**: done once a part FAILs on its own merits after the test started and that part's
  reject pulse was fired on time;
- **checklist**: ticked items kept in ``<data>/setup-checklist.json``.

``<data>`` is the station's data folder, the folder of ``api.audit_log``. Every change is written to
the station's audit log.

>>> exposure_of(np.full((4, 4), 128, np.uint8))[2]
'ok'
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, Field, ValidationError

from serving.config import parse_config, read_yaml
from serving.drift.figures import part_figures
from serving.engine.preprocess import Roi, check_roi_scale, crop_roi, resize
from serving.errors import ConfigError, LineguardError, RoiError
from serving.images import to_rgb
from serving.strict import StrictModel, describe_errors

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


# ------------------------------------------------------------------ camera: focus and exposure
def exposure_of(grey: np.ndarray, baseline_luminance: float | None = None) -> tuple[list[int], float, str, str, float,
                                                                                     float]:
    """(histogram, mean, verdict, hint, dark fraction, bright fraction) of a uint8 grey image."""
    hist = np.bincount((grey.ravel() >> 3).astype(np.intp), minlength=HIST_BINS)[:HIST_BINS]  # 256 / 8 = 32 bins
    n = max(grey.size, 1)
    dark, bright = float(np.count_nonzero(grey <= CLIPPED[0]) / n), float(np.count_nonzero(grey >= CLIPPED[1]) / n)
    mean = float(grey.mean()) if grey.size else 0.0
    ref = f"; enrollment mean {baseline_luminance:.0f}" if baseline_luminance is not None else ""
    if bright > CLIP_LIMIT:
        verdict, hint = "clipped_bright", f"{bright:.0%} of pixels saturated: lower exposure, gain or light{ref}"
    elif dark > CLIP_LIMIT:
        verdict, hint = "clipped_dark", f"{dark:.0%} of pixels crushed to black: more exposure or light{ref}"
    elif mean < 50:
        verdict, hint = "dark", f"mean grey {mean:.0f} of 255: too dark, raise exposure or light{ref}"
    elif mean > 205:
        verdict, hint = "bright", f"mean grey {mean:.0f} of 255: too bright, lower exposure or light{ref}"
    else:
        verdict, hint = "ok", f"mean grey {mean:.0f} of 255, no clipping{ref}"
    return [int(v) for v in hist], round(mean, 2), verdict, hint, round(dark, 4), round(bright, 4)


def _snapshot(station):
    """(record, view, engine) of the last inspected part, read together."""
    with station._lock:  # the inspection thread sets last and last_view together under this lock
        return station.state.last, station.state.last_view, station.engine


def live_figures(snap) -> LiveFigures | None:
    """Focus and exposure of a (record, view, engine) snapshot (None before the first part with a picture)."""
    rec, view, engine = snap
    if rec is None or view is None:
        return None
    rgb = to_rgb(view.image, source=f"part {rec.seq}")
    region = "frame"
    if engine.roi is not None:
        try:
            rgb, region = crop_roi(rgb, engine.roi, source=f"part {rec.seq}"), "roi"
        except RoiError:  # a ROI outside the frame: show the whole frame (the page says which)
            pass
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    base = engine.bundle.manifest.baseline
    hist, mean, verdict, hint, dark, bright = exposure_of(grey, base.luminance.mean if base else None)
    h, w = view.image.shape[:2]
    return LiveFigures(seq=rec.seq, wall_time=rec.wall_time, verdict=rec.verdict, frame_w=w, frame_h=h, region=region,
                       focus=part_figures(rgb).sharpness, luminance=mean, histogram=hist, dark_fraction=dark,
                       bright_fraction=bright, exposure=verdict, exposure_hint=hint, model_sharpness=rec.sharpness,
                       baseline_sharpness=base.sharpness.p50 if base else None,
                       baseline_luminance=base.luminance.mean if base else None)


def frame_png(snap, max_px: int = FRAME_MAX_PX) -> tuple[bytes, int, int, int] | None:
    """(PNG, seq, width, height) of a snapshot's whole camera frame, at most ``max_px`` on its long side."""
    rec, view, _ = snap
    if rec is None or view is None:
        return None
    rgb = to_rgb(view.image, source=f"part {rec.seq}")
    h, w = rgb.shape[:2]
    scale = min(1.0, max_px / max(h, w))
    if scale < 1.0:
        rgb = resize(rgb, max(1, round(h * scale)), max(1, round(w * scale)))
    return _png(rgb), rec.seq, w, h


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise SetupError("PNG encoding failed")
    return buf.tobytes()


# ------------------------------------------------------------------ ROI, saved into the config file
_ROI_LINE = re.compile(r"^roi[ \t]*:[^\n#]*?(?P<comment>[ \t]+#[^\n]*)?$", re.M)
_BUNDLE_LINE = re.compile(r"^bundle[ \t]*:[^\n]*$", re.M)


def with_roi(text: str, roi: str | None) -> str:
    """The config text with its top-level ``roi:`` set (its comment kept), or the key added after ``bundle:``."""
    value = "null" if roi is None else f'"{roi}"'
    lines = _ROI_LINE.findall(text)
    if len(lines) > 1:
        raise SetupError("the config has more than one top-level 'roi:' line; keep one")
    if lines:
        return _ROI_LINE.sub(lambda m: f"roi: {value}" + (m.group("comment") or ""), text, count=1)
    line = f"roi: {value}                     # x,y,w,h, saved from the setup page"
    m = _BUNDLE_LINE.search(text)
    if m:
        return text[:m.end()] + "\n" + line + text[m.end():]
    return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"


def write_roi(path: Path, roi: str | None) -> str | None:
    """Set ``roi`` in the station config file ``path``, keeping everything else; return the ROI it had.

    The new text is written beside the file, read back and validated as a whole station config, and only
    then moved over the file, so a failed save leaves the file exactly as it was."""
    try:
        old_text = path.read_text()
    except OSError as exc:
        raise SetupError(f"{path}: cannot read the station config ({exc.strerror}); the ROI was not saved") from None
    old = read_yaml(path)
    new_text = with_roi(old_text, roi)
    tmp = path.with_name(f".{path.name}.setup-{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(new_text)
            fh.flush()
            os.fsync(fh.fileno())
        shutil.copymode(path, tmp)
        try:
            new = read_yaml(tmp)
        except ConfigError:
            new = None
        if new != {**old, "roi": roi}:
            raise SetupError(f"{path}: could not change only the 'roi' key of this file safely (is it written in "
                             f"flow style?); set roi: \"{roi}\" by hand. Nothing was changed")
        parse_config(new, source=str(path), base=path.parent)
        os.replace(tmp, path)
    except OSError as exc:
        raise SetupError(f"{path}: cannot write the station config ({exc.strerror}); the ROI was not saved") from None
    finally:
        tmp.unlink(missing_ok=True)
    return old.get("roi")


def check_roi(station, roi: Roi | None, frame_size: tuple[int, int] | None) -> None:
    """Refuse a ROI the engine could not use: outside the camera frame, or too small for the model's input."""
    if roi is None:
        return
    check_roi_scale(roi, station.engine.spec, source="roi")
    if frame_size is not None:
        w, h = frame_size
        if roi.x + roi.w > w or roi.y + roi.h > h:
            raise RoiError(f"roi {roi.x},{roi.y},{roi.w},{roi.h} reaches beyond the camera's {w}x{h} frame; "
                           "draw it inside the picture")


def apply_roi(station, roi: Roi | None, text: str | None) -> None:
    """Use ``roi`` (None: the bundle's) from the next part on: a copy of the engine with it is swapped in, as a
    bundle swap is, so no part is inspected half with the old ROI and half with the new one."""
    with station._control:  # a bundle swap meanwhile would otherwise take the old ROI along
        engine = copy.copy(station.engine)  # shares the loaded graph; only the crop differs
        engine.roi = roi if roi is not None else station.engine.bundle.manifest.roi
        with station._lock:
            station.engine = engine
            station.cfg.roi = text


# ------------------------------------------------------------------ baseline capture
class BaselineCapture:
    """Saves the next ``target`` inspected frames, whole, as PNG files, from a thread of its own (never the
    inspection thread). A part whose inspection failed before the engine has no picture and is skipped."""

    def __init__(self, station, root: Path, name: str, target: int, user: str) -> None:
        self.station, self.root, self.name, self.target, self.user = station, root, name, target, user
        self.folder = root / "train" / "good"
        self.saved = self.skipped = 0
        self.error: str | None = None
        self.started_at, self.finished_at = time.time(), None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"baseline-{name}", daemon=True)

    @property
    def done(self) -> bool:
        """True once the capture ended: all frames saved, stopped, or failed."""
        return self._done.is_set()

    def start(self) -> "BaselineCapture":
        """Create the folder and start saving."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the capture now; the frames saved so far stay."""
        self._stop.set()
        self._thread.join(5)

    def enroll_command(self) -> str:
        """The pipeline command that enrolls a bundle from this folder, with the station's ROI."""
        roi = self.station.cfg.roi
        return (f"lineguard enroll --data {self.root} --out models/{self.station.cfg.station_id}-{self.name}/bundle"
                + (f" --roi {roi}" if roi else "") + " calibration.target_frr=0.05")

    def status(self) -> BaselineStatus:
        """Progress for the page."""
        return BaselineStatus(name=self.name, folder=str(self.root), target=self.target, saved=self.saved,
                              skipped=self.skipped, done=self.done, stopped=self._stop.is_set(), error=self.error,
                              started_by=self.user, started_at=self.started_at, enroll_command=self.enroll_command())

    def _run(self) -> None:
        st = self.station
        last = st.state.last.seq if st.state.last is not None else None
        try:
            while self.saved < self.target and not self._stop.wait(POLL_S):
                rec, view, _ = _snapshot(st)
                if rec is None or rec.seq == last:
                    if st.state.finished or not st.state.running:
                        raise SetupError(f"the station stopped inspecting after {self.saved} of {self.target} frames")
                    continue
                last = rec.seq
                if view is None:
                    self.skipped += 1
                    continue
                self._save(f"{self.name}-{rec.seq:07d}.png", to_rgb(view.image, source=f"part {rec.seq}"))
                self.saved += 1
        except (LineguardError, OSError) as exc:
            self.error = f"{exc}; {self.saved} frames kept in {self.folder}"
        finally:
            self.finished_at = time.time()
            self._write_summary()
            st.audit.append(self.user, "setup_baseline_captured", {
                "name": self.name, "folder": str(self.root), "saved": self.saved, "target": self.target,
                "skipped": self.skipped, "stopped": self._stop.is_set(), "error": self.error, "roi": st.cfg.roi})
            self._done.set()

    def _save(self, name: str, rgb: np.ndarray) -> None:
        data = _png(rgb)
        tmp = self.folder / f".{name}.tmp"  # a half-written PNG never lands in the enrollment folder
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / name)

    def _write_summary(self) -> None:
        info = {"station_id": self.station.cfg.station_id, "started_by": self.user, "started_at": self.started_at,
                "finished_at": self.finished_at, "saved": self.saved, "target": self.target, "roi": self.station.cfg.roi,
                "bundle_running": self.station.engine.bundle.manifest.bundle_version, "error": self.error,
                "enroll": self.enroll_command()}
        try:
            (self.root / "baseline.json").write_text(json.dumps(info, indent=2))
        except OSError:  # the images are what matters; the page still shows the figures
            pass


def check_disk(folder: Path, frame_bytes: int, count: int) -> None:
    """Refuse a capture the disk cannot hold (PNG of a camera frame: at most about its raw size)."""
    need = frame_bytes * count + 100 * 1024 * 1024  # and keep 100 MiB for the evidence buffer's next minutes
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise SetupError(f"{folder}: {count} frames need about {need / 2**20:.0f} MiB and {free / 2**20:.0f} MiB are "
                         "free; capture fewer frames or free space")


# ------------------------------------------------------------------ signal test
class SignalTest:
    """Waits for a FAIL decided by the model or the gate (not a fail-safe reject) on a part inspected after the
    test started, and for that part's reject pulse to have fired on time; passing is audited once."""

    def __init__(self, station, user: str) -> None:
        st = self.station = station
        self.user, self.started_at = user, time.time()
        self.boot_id = st.boot_id
        self.after_seq = int(st.evidence.scalar("SELECT COALESCE(MAX(seq), 0) FROM frames WHERE boot_id=?",
                                                (st.boot_id,)) or 0)
        a = st.cfg.actuator
        self.pulse_observable = a.kind != "none" and a.pulse_owner == "station"
        if a.kind == "none":
            self.note = "actuator 'none': no reject output is wired, so the test proves the FAIL only"
        elif a.pulse_owner == "plc":
            self.note = ("the PLC times the reject pulse (pulse_owner: plc): the station cannot see it; check the "
                         "part lands in the reject bin")
        else:
            self.note = "the reject pulse is the one the station wrote to the PLC for the failed part"
        self._result = SignalStatus(started_by=user, started_at=self.started_at, after_seq=self.after_seq,
                                    pulse_observable=self.pulse_observable, note=self.note)
        self._lock = threading.Lock()

    def status(self) -> SignalStatus:
        """What happened since the start; the first passing part is kept."""
        with self._lock:
            if not self._result.passed:
                self._look()
            return self._result.model_copy()

    def _look(self) -> None:
        st, r = self.station, self._result
        fails = [x for x in st.evidence.query("boot_id=? AND seq>? AND verdict='FAIL'", (self.boot_id, self.after_seq),
                                              limit=200, order="seq") if not x.rule.startswith("fail_safe")]
        if not fails:
            return
        by_seq = {x.seq: x for x in fails}
        reports = [p for p in list(st.actuator.pulses.reports) if p.seq in by_seq]
        good = [p for p in reports if not (p.late or p.short or p.missed)]
        chosen = by_seq[good[0].seq] if good else fails[0]
        r.fail_seq, r.fail_rule, r.fail_score = chosen.seq, chosen.rule, chosen.score
        if good:
            p = good[0]
            r.pulse_seq, r.pulse_start_error_ms, r.pulse_width_ms, r.pulse_problem = p.seq, p.start_error_ms, p.width_ms, None
        elif reports:
            p = reports[-1]
            r.pulse_seq, r.pulse_start_error_ms, r.pulse_width_ms = p.seq, p.start_error_ms, p.width_ms
            r.pulse_problem = f"part {p.seq}: {p.note or 'pulse not on time'}"
        if good or not self.pulse_observable:  # no pulse the station can see: the FAIL is what can be proven
            r.passed, r.passed_at = True, time.time()
            st.audit.append(self.user, "setup_signal_test_passed", {
                "fail_seq": r.fail_seq, "rule": r.fail_rule, "score": r.fail_score, "pulse_seq": r.pulse_seq,
                "pulse_start_error_ms": r.pulse_start_error_ms, "pulse_width_ms": r.pulse_width_ms,
                "actuator": st.cfg.actuator.kind, "pulse_owner": st.cfg.actuator.pulse_owner})


# ------------------------------------------------------------------ checklist
class Checklist:
    """The commissioning checklist's state, kept in a JSON file beside the audit log; every tick audited."""

    def __init__(self, path: Path, audit) -> None:
        self.path, self.audit = path, audit
        self._lock = threading.Lock()

    def load(self) -> ChecklistFile:
        """The stored state; a damaged file is named and left as it is (never overwritten)."""
        if not self.path.exists():
            return ChecklistFile()
        try:
            return ChecklistFile.model_validate(json.loads(self.path.read_text()))
        except (OSError, ValueError) as exc:
            why = describe_errors(exc, model=ChecklistFile) if isinstance(exc, ValidationError) else str(exc)
            raise SetupError(f"{self.path}: the setup checklist cannot be read ({why}); fix or move the file away "
                             "(it is kept as it is)") from None

    def items(self) -> list[ChecklistItemView]:
        """Every checklist item with its state."""
        state = self.load().items
        return [ChecklistItemView(id=s.id, title=s.title, done_when=s.done_when,
                                  **state.get(s.id, ItemState()).model_dump()) for s in CHECKLIST]

    def set(self, item: str, change: ChecklistChange, user: str) -> list[ChecklistItemView]:
        """Tick or untick ``item``: written (atomically) and audited."""
        if item not in STEP_IDS:
            raise SetupError(f"no checklist item {item!r}; the items are {', '.join(STEP_IDS)}")
        with self._lock:
            data = self.load()
            data.items[item] = ItemState(done=change.done, by=user, at=time.time(), note=change.note)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "w") as fh:
                    fh.write(data.model_dump_json(indent=2))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                raise SetupError(f"{self.path}: cannot save the checklist ({exc.strerror})") from None
            self.audit.append(user, "setup_checklist", {"item": item, "done": change.done, "note": change.note})
        return self.items()


# ------------------------------------------------------------------ the whole mode
class SetupMode:
    """Setup mode of one running station: the checklist, the running baseline capture and signal test."""

    def __init__(self, station) -> None:
        self.station = station
        self.data_dir = Path(station.cfg.api.audit_log).resolve().parent
        self.checklist = Checklist(self.data_dir / CHECKLIST_FILE, station.audit)
        self.baseline: BaselineCapture | None = None
        self.signal: SignalTest | None = None
        self._seen = None  # (record, view) of the latest part with a picture
        self._lock = threading.Lock()

    def latest(self):
        """(record, view, engine): the latest part with a picture. A part without one (dropped, or failed before
        the engine) leaves the one before it on show: the camera step and the ROI need a picture."""
        rec, view, engine = _snapshot(self.station)
        if view is not None:
            self._seen = (rec, view)
        elif self._seen is not None:
            rec, view = self._seen
        return rec, view, engine

    @property
    def config_file(self) -> Path | None:
        """The station's config file (None when the station was built in code: the ROI cannot be saved)."""
        return self.station.cfg.source_file

    def roi(self) -> tuple[str | None, str]:
        """(ROI in force as x,y,w,h, where it comes from: 'config', 'bundle' or 'none')."""
        st = self.station
        if st.cfg.roi:
            return st.cfg.roi, "config"
        r = st.engine.roi
        return (f"{r.x},{r.y},{r.w},{r.h}", "bundle") if r is not None else (None, "none")

    def save_roi(self, text: str | None, user: str) -> str | None:
        """Validate, write into the config file, apply from the next part, audit. Returns the ROI saved."""
        st = self.station
        path = self.config_file
        if path is None:
            raise SetupError("this station was not started from a config file (lineguard-station run --config "
                             "FILE), so there is no file to save the ROI in")
        roi = Roi.parse(text)
        text = None if roi is None else f"{roi.x},{roi.y},{roi.w},{roi.h}"
        _, view, _ = self.latest()
        if roi is not None and view is None:
            raise SetupError("no camera frame seen yet, so the ROI cannot be checked against it; wait for the first "
                             "inspected part")
        check_roi(st, roi, (view.image.shape[1], view.image.shape[0]) if view is not None else None)
        before = st.cfg.roi
        with self._lock:
            try:
                write_roi(path, text)
            except ConfigError as exc:  # the file on disk no longer parses: say so, change nothing
                raise SetupError(f"{exc}; the ROI was not saved") from None
            apply_roi(st, roi, text)
            st.audit.append(user, "setup_roi_saved", {"before": before, "after": text, "config": str(path),
                                                      "applied": "from the next part"})
        return text

    def start_baseline(self, req: BaselineRequest, user: str) -> BaselineCapture:
        """Start saving the next frames into ``<data>/baselines/<name>``; the folder must be new or empty."""
        st = self.station
        with self._lock:
            if self.baseline is not None and not self.baseline.done:
                raise SetupError(f"baseline '{self.baseline.name}' is still capturing ({self.baseline.saved} of "
                                 f"{self.baseline.target}); stop it first")
            root = self.data_dir / BASELINES / req.name
            good = root / "train" / "good"
            if good.is_dir() and any(good.iterdir()):
                raise SetupError(f"{good} already holds {sum(1 for _ in good.iterdir())} files; choose another name "
                                 "(nothing was overwritten)")
            _, view, _ = self.latest()
            check_disk(root, view.image.nbytes if view is not None else 3 * 1920 * 1080, req.count)
            cap = BaselineCapture(st, root, req.name, req.count, user)
            st.audit.append(user, "setup_baseline_started", {"name": req.name, "folder": str(root),
                                                             "count": req.count, "roi": st.cfg.roi})
            self.baseline = cap.start()
        return cap

    def stop_baseline(self, user: str) -> BaselineCapture:
        """End the running baseline capture now (the frames saved so far stay)."""
        cap = self.baseline
        if cap is None:
            raise SetupError("no baseline capture was started")
        if not cap.done:
            st = self.station
            st.audit.append(user, "setup_baseline_stopped", {"name": cap.name, "saved": cap.saved})
            cap.stop()
        return cap

    def start_signal_test(self, user: str) -> SignalTest:
        """(Re)start the signal test: only parts inspected from now on count."""
        test = SignalTest(self.station, user)
        self.station.audit.append(user, "setup_signal_test_started", {"after_seq": test.after_seq,
                                                                      "actuator": self.station.cfg.actuator.kind})
        self.signal = test
        return test

