"""Why a part failed: the normal patches its most anomalous region was compared with, and the nearest normal.

PatchCore scores each patch of a part by its distance to the nearest patch of the memory bank, and the
graph returns that nearest patch's index per part patch (``patch_match``). The bundle keeps, per bank
patch, the enrolled image and grid cell it came from (``explain/bank_source.npy``: image_index, row, col),
a thumbnail of every enrolled normal (``explain/normals/NNNN.jpg``), their file names
(``explain/normals.json``) and their fingerprints (``explain/fingerprints.npy``). From these:

* **region**: the anomaly map is averaged per patch; the region is the patches above the pixel threshold
  joined (8-connected) to the patch holding the map's maximum (widened to its 3x3 neighbourhood when
  smaller than 3 patches);
* **top-3 normal patches**: ``patch_match`` at the region's most anomalous patches, most anomalous first,
  skipping a patch whose bank match an earlier one already shows -- the bank patches the graph really
  compared them with (not a second search for the 3 nearest bank patches of one patch);
* **nearest normal**: the enrolled normal whose fingerprint is nearest the part's; for a bundle without
  fingerprints, the normal the most anomalous patch was matched in.

Runs for FAIL parts only, after the reject is scheduled; numpy and opencv only. Drawing the picture is
:mod:`serving.engine.explain_picture`.

>>> ex = Explainer.load(load_bundle("models/elpv/bundle"))          # doctest: +SKIP
>>> why = ex.explain(engine.infer(image), engine.thresholds.pixel)   # doctest: +SKIP
>>> picture, why = ex.render(heatmap_overlay_rgb, why)               # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json

import cv2
import numpy as np

from serving.engine.bundle import Bundle, read_array
from serving.errors import BundleError
from serving.engine.explain_picture import render as render_picture
from serving.explanation import Box, Explanation, NearestNormal, NormalPatch

class Explainer:
    """A bundle's explain files, loaded once per bundle (the engine keeps one, made at its first FAIL)."""

    def __init__(self, bundle: Bundle) -> None:
        m = bundle.manifest
        self.bundle_version = m.bundle_version
        self.input = (m.input.height, m.input.width)
        ex = m.explain
        self.files: list[str] = []
        self.bank_source = np.zeros((0, 3), np.int64)
        self.fingerprints: np.ndarray | None = None
        self.thumbnails = bundle.path(ex["thumbnails"]) if ex.get("thumbnails") else None
        self.note = ""
        if not ex:
            self.note = f"bundle {m.bundle_version} has no explain files; re-export it to see the nearest normals"
            return
        if ex.get("index"):
            path = bundle.path(ex["index"])
            try:
                files = json.loads(path.read_text())["files"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BundleError(f"{path}: not the normals index export writes ({type(exc).__name__}: {exc}); "
                                  "re-export the bundle") from None
            self.files = [str(f) for f in files]
        if ex.get("bank_source"):
            path = bundle.path(ex["bank_source"])
            src = read_array(path)
            shaped = src.ndim == 2 and src.shape[1] == 3 and np.issubdtype(src.dtype, np.integer)
            if not shaped or (len(src) and (src.min() < 0 or src[:, 0].max() >= max(len(self.files), 1))):
                raise BundleError(f"{path}: expected rows (image_index, row, col) naming the {len(self.files)} "
                                  f"enrolled normals, got shape {src.shape}; re-export the bundle")
            self.bank_source = src.astype(np.int64)
        if ex.get("fingerprints"):
            path = bundle.path(ex["fingerprints"])
            fp = read_array(path)
            if fp.ndim != 2 or len(fp) != len(self.files):
                raise BundleError(f"{path}: expected one fingerprint per enrolled normal ({len(self.files)}), "
                                  f"got shape {fp.shape}; re-export the bundle")
            self.fingerprints = fp.astype(np.float32)
        if not len(self.bank_source):
            self.note = f"{m.algorithm} has no memory bank: no normal patches to show, only the nearest normal"

    @classmethod
    def load(cls, bundle: Bundle) -> Explainer:
        """Read and check the bundle's explain files (:class:`BundleError` names a damaged one)."""
        return cls(bundle)

    # ------------------------------------------------------------------ computation
    def explain(self, result, pixel_threshold: float) -> Explanation:
        """The explanation of one scored part (an :class:`~serving.engine.anomaly.AnomalyResult`)."""
        amap = np.asarray(result.anomaly_map, np.float32)
        match = np.asarray(result.patch_match)
        H, W = amap.shape
        h, w = match.shape
        cells = cv2.resize(amap, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != (H, W) else amap
        py, px = np.unravel_index(int(np.argmax(amap)), amap.shape)
        peak = (min(int(py) * h // H, h - 1), min(int(px) * w // W, w - 1))
        mask = (cells > pixel_threshold).astype(np.uint8)
        mask[peak] = 1
        _, labels = cv2.connectedComponents(mask, connectivity=8)
        rows, cols = np.nonzero(labels == labels[peak])
        order = np.argsort(-cells[rows, cols], kind="stable")
        ranked = [(int(rows[i]), int(cols[i])) for i in order]
        if len(ranked) < 3:  # a lone peak: its neighbours are what the region looks like
            near = [(r, c) for r in range(peak[0] - 1, peak[0] + 2) for c in range(peak[1] - 1, peak[1] + 2)
                    if 0 <= r < h and 0 <= c < w and (r, c) not in ranked]
            ranked += sorted(near, key=lambda rc: -float(cells[rc]))
        region = _bbox(ranked, (h, w), (H, W))

        patches: list[NormalPatch] = []
        seen: set[int] = set()
        notes = [self.note] if self.note else []
        for r, c in ranked:
            if len(patches) == 3 or not len(self.bank_source):
                break
            b = int(match[r, c])
            if b in seen:
                continue
            seen.add(b)
            if not 0 <= b < len(self.bank_source):
                notes.append(f"patch_match {b} is outside the bundle's bank_source ({len(self.bank_source)} rows)")
                continue
            img, nr, nc = (int(v) for v in self.bank_source[b])
            if not (0 <= nr < h and 0 <= nc < w):
                notes.append(f"bank patch {b} lies at row {nr}, col {nc}, outside the {h}x{w} patch grid")
                continue
            patches.append(NormalPatch(rank=len(patches) + 1, cell=(r, c), box=_cell_box(r, c, (h, w), (H, W)),
                                       score=round(float(cells[r, c]), 4), bank_index=b, normal_index=img,
                                       normal_file=self._file(img), normal_cell=(nr, nc),
                                       normal_box=_cell_box(nr, nc, (h, w), self.input)))
        return Explanation(bundle_version=self.bundle_version, grid=(h, w), input=(H, W), peak=(int(px), int(py)),
                           peak_value=round(float(amap[py, px]), 4), region=region,
                           region_cells=len(ranked), patches=patches,
                           nearest=self._nearest(getattr(result, "embedding", None), patches), note="; ".join(notes))

    def _file(self, i: int) -> str:
        return self.files[i] if 0 <= i < len(self.files) else f"normal #{i}"

    def _nearest(self, embedding, patches: list[NormalPatch]) -> NearestNormal | None:
        fp = self.fingerprints
        if fp is not None and embedding is not None and np.asarray(embedding).shape == fp.shape[1:] and len(fp):
            d = np.linalg.norm(fp - np.asarray(embedding, np.float32), axis=1)
            i = int(np.argmin(d))
            return NearestNormal(index=i, file=self._file(i), how="fingerprint", distance=round(float(d[i]), 4))
        if patches:
            return NearestNormal(index=patches[0].normal_index, file=patches[0].normal_file, how="best_patch")
        return None

    # ------------------------------------------------------------------ picture
    @functools.lru_cache(maxsize=64)  # noqa: B019 - one explainer per bundle, kept as long as its engine
    def thumbnail(self, index: int) -> np.ndarray | None:
        """The enrolled normal ``index`` as uint8 RGB (its thumbnail), or None when the bundle has none."""
        if self.thumbnails is None:
            return None
        bgr = cv2.imread(str(self.thumbnails / f"{index:04d}.jpg"), cv2.IMREAD_COLOR)
        return None if bgr is None else np.ascontiguousarray(bgr[:, :, ::-1])

    def render(self, overlay_rgb: np.ndarray, why: Explanation, panel_px: int = 240) -> tuple[np.ndarray, Explanation]:
        """The side-by-side picture of ``why`` (:func:`serving.engine.explain_picture.render`) with this bundle's
        thumbnails."""
        return render_picture(self.thumbnail, overlay_rgb, why, panel_px)


def _cell_box(r: int, c: int, grid: tuple[int, int], size: tuple[int, int]) -> Box:
    (h, w), (H, W) = grid, size
    x0, x1 = round(c * W / w), round((c + 1) * W / w)
    y0, y1 = round(r * H / h), round((r + 1) * H / h)
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)


def _bbox(cells: list[tuple[int, int]], grid: tuple[int, int], size: tuple[int, int]) -> Box:
    boxes = [_cell_box(r, c, grid, size) for r, c in cells]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return x0, y0, x1 - x0, y1 - y0
