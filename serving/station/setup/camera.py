"""The camera step: focus and exposure figures of the latest frame, and the frame itself as PNG."""

from __future__ import annotations

import cv2
import numpy as np

from serving.drift.figures import part_figures
from serving.engine.preprocess import crop_roi, resize
from serving.errors import RoiError
from serving.images import to_rgb
from serving.station.setup.models import CLIP_LIMIT, CLIPPED, FRAME_MAX_PX, HIST_BINS, LiveFigures, SetupError

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


def snapshot(station):
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
    return png(rgb), rec.seq, w, h


def png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise SetupError("PNG encoding failed")
    return buf.tobytes()
