"""The ROI step: the ROI checked against the frame and the model, saved into the station's config file (only
its ``roi:`` line changes) and applied from the next part."""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

from serving.config import parse_config, read_yaml
from serving.engine.preprocess import Roi, check_roi_scale
from serving.errors import ConfigError, RoiError
from serving.station.setup.models import SetupError

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
