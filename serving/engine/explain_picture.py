"""The explanation as a picture: heatmap overlay | nearest normal | the three normal patches, side by side.

:class:`~serving.engine.explain.Explainer` finds *why* a part failed; this module draws it, cuts panels out of a
stored picture for the API and Label Studio, and encodes them. Numpy and opencv only.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from serving.explanation import PANELS, Box, Explanation, NormalPatch

#: outline colours (RGB) of the patches ranked 1, 2, 3: apart from the heatmap's blue-green-red scale
RANK_COLORS = ((0, 255, 255), (255, 0, 255), (255, 190, 0))
REGION_COLOR = (255, 255, 255)
BACKGROUND = 24  #: dark grey between the panels

Thumbnail = Callable[[int], "np.ndarray | None"]  #: enrolled normal index -> uint8 RGB thumbnail, or None


def render(thumbnail: Thumbnail, overlay_rgb: np.ndarray, why: Explanation,
           panel_px: int = 240) -> tuple[np.ndarray, Explanation]:
    """One side-by-side picture: heatmap overlay | nearest normal | the 3 normal patches, the region and
    each patch outlined in its rank's colour. Returns it (uint8 RGB) and ``why`` with the panels' boxes;
    ``thumbnail(i)`` gives enrolled normal ``i`` as uint8 RGB (or None)."""
    P, title, pad = panel_px, 22, 6
    H, W = why.input
    oh, ow = overlay_rgb.shape[:2]
    widths = [min(max(round(ow * P / oh), P // 2), 2 * P), max(round(P * W / H), 1), P, P, P]
    out = np.full((title + P + pad, sum(widths) + pad * (len(widths) + 1), 3), BACKGROUND, np.uint8)
    boxes: dict[str, Box] = {}
    x = pad
    for name, width in zip(PANELS, widths):
        boxes[name] = (x, title, width, P)
        x += width + pad
    _overlay_panel(out, boxes["overlay"], overlay_rgb, why)
    _normal_panel(out, boxes["normal"], why, thumbnail)
    for k in range(3):
        _patch_panel(out, boxes[f"patch{k + 1}"], why.patches[k] if k < len(why.patches) else None, why,
                     thumbnail)
    return out, why.model_copy(update={"picture": boxes})


def _overlay_panel(out: np.ndarray, box: Box, overlay: np.ndarray, why: Explanation) -> None:
    x, y, w, h = box
    panel = np.ascontiguousarray(_fit(overlay, h, w))
    sx, sy = w / why.input[1], h / why.input[0]
    _rect(panel, why.region, sx, sy, REGION_COLOR, 2)
    for p in why.patches:
        _rect(panel, p.box, sx, sy, RANK_COLORS[p.rank - 1], 1, label=str(p.rank))
    out[y:y + h, x:x + w] = panel
    _title(out, box, "part: heatmap, region")


def _normal_panel(out: np.ndarray, box: Box, why: Explanation, thumbnail: Thumbnail) -> None:
    x, y, w, h = box
    near = why.nearest
    thumb = thumbnail(near.index) if near is not None else None
    if thumb is None:
        _title(out, box, "no nearest normal")
        return
    panel = np.ascontiguousarray(_fit(thumb, h, w))
    sx, sy = w / why.input[1], h / why.input[0]
    for p in why.patches:
        if p.normal_index == near.index:  # a matched patch that lies in this very normal
            _rect(panel, p.normal_box, sx, sy, RANK_COLORS[p.rank - 1], 1, label=str(p.rank))
    out[y:y + h, x:x + w] = panel
    _title(out, box, f"nearest normal #{near.index}")


def _patch_panel(out: np.ndarray, box: Box, p: NormalPatch | None, why: Explanation,
                 thumbnail: Thumbnail) -> None:
    x, y, w, h = box
    thumb = thumbnail(p.normal_index) if p is not None else None
    if thumb is None:
        _title(out, box, "no patch")
        return
    # the bank patch with one patch of context around it (what its features saw), in thumbnail pixels
    H, W = why.input
    th, tw = thumb.shape[:2]
    bx, by, bw, bh = p.normal_box
    cx0 = min(max(bx - bw, 0), max(W - 3 * bw, 0))
    cy0 = min(max(by - bh, 0), max(H - 3 * bh, 0))
    cw, ch = min(3 * bw, W), min(3 * bh, H)
    kx, ky = tw / W, th / H
    crop = thumb[round(cy0 * ky):max(round((cy0 + ch) * ky), round(cy0 * ky) + 1),
                 round(cx0 * kx):max(round((cx0 + cw) * kx), round(cx0 * kx) + 1)]
    panel = np.ascontiguousarray(cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC))
    _rect(panel, (bx - cx0, by - cy0, bw, bh), w / cw, h / ch, RANK_COLORS[p.rank - 1], 2)
    out[y:y + h, x:x + w] = panel
    _title(out, box, f"{p.rank}: normal #{p.normal_index} r{p.normal_cell[0]} c{p.normal_cell[1]}")


def panel(picture: np.ndarray, why: Explanation, name: str) -> np.ndarray:
    """One panel of a rendered picture (``overlay``, ``normal``, ``patch1``-``patch3``; ``patches`` spans the
    three patch crops; ``picture`` is the whole)."""
    boxes = why.picture
    if name != "picture" and not boxes:
        raise ValueError("this explanation was never rendered: it has no panels")
    if name == "picture":
        return picture
    if name == "patches":
        x0, y0, _, h = boxes["patch1"]
        x1, _, w1, _ = boxes["patch3"]
        return picture[y0:y0 + h, x0:x1 + w1]
    x, y, w, h = boxes[name]
    return picture[y:y + h, x:x + w]


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img.copy()
    shrink = img.shape[0] > h or img.shape[1] > w
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _rect(img: np.ndarray, box: Box, sx: float, sy: float, color, thickness: int, label: str = "") -> None:
    x, y, w, h = box
    p0 = (round(x * sx), round(y * sy))
    p1 = (min(round((x + w) * sx) - 1, img.shape[1] - 1), min(round((y + h) * sy) - 1, img.shape[0] - 1))
    cv2.rectangle(img, p0, p1, color, thickness)
    if label:
        ty = p0[1] - 3 if p0[1] > 14 else p1[1] + 13
        cv2.putText(img, label, (p0[0], min(ty, img.shape[0] - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                    cv2.LINE_AA)


def _title(out: np.ndarray, box: Box, text: str) -> None:
    x, y, w, _ = box
    text = text.encode("ascii", "replace").decode()
    scale = 0.45
    while scale > 0.3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > w:
        scale -= 0.05
    cv2.putText(out, text, (x, y - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), 1, cv2.LINE_AA)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """uint8 RGB -> JPEG bytes (the picture is for eyes: a JPEG is a quarter of a PNG and 3x faster to write)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def panel_jpeg(picture_jpeg: bytes, why: Explanation, name: str) -> bytes:
    """One panel (see :func:`panel`) of a stored picture, as JPEG."""
    if name == "picture":
        return picture_jpeg
    bgr = cv2.imdecode(np.frombuffer(picture_jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the stored picture is not a JPEG")
    return encode_jpeg(panel(bgr[:, :, ::-1], why, name))
