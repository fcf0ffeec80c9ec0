"""Drift scenarios on real images: what a line does to a station's normal, as reproducible streams.

Each scenario is a list of ELPV cells (mono; poly for a changeover) with a transform per part: small,
realistic jitter on every part (gain +-3 %, placement within 2 px), and after the change
point the drift itself: a lighting drop (30 % darker, an ageing or failed lamp), a camera knock (the
part 6 % off-centre and 2 degrees rotated), a defocus (Gaussian blur, sigma 1.5 px), or a changeover
to another product (poly cells where the station was enrolled on mono). The drift tests, the drift
benchmark and ``lineguard stability`` on an exported scenario all replay these same streams.

>>> split = elpv_split(n_enroll=100, seed=0)        # doctest: +SKIP
>>> stream = scenario("lighting", split, n_before=100, n_after=100)   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flows.data.prepare import elpv_root, read_labels
from serving.images import read_image

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
SCENARIOS = ("stable", "changeover", "lighting", "knock", "defocus")


@dataclass(frozen=True)
class ElpvSplit:
    """ELPV cells by role: mono normals to enroll, held-out mono normals, mono defects, poly normals and defects."""

    enroll: list[Path]
    held_out: list[Path]
    defects: list[Path]
    poly: list[Path]
    poly_defects: list[Path]


def elpv_split(n_enroll: int = 100, seed: int = 0) -> ElpvSplit:
    """A seeded split of the ELPV package's cells (defect probability 0 = normal, 1 = defect)."""
    root = elpv_root()
    rows = read_labels(root)
    rng = np.random.default_rng(seed)

    def pick(kind: str, prob: float) -> list[Path]:
        files = [root / r[0] for r in rows if r[2] == kind and r[1] == prob]
        return [files[i] for i in rng.permutation(len(files))]

    mono = pick("mono", 0.0)
    return ElpvSplit(mono[:n_enroll], mono[n_enroll:], pick("mono", 1.0), pick("poly", 0.0), pick("poly", 1.0))


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What differs between two good parts on a steady line: gain +-3 % and up to 2 px of placement.

    Whole-pixel shifts only (a part placed 1.3 px off is still imaged sharply; resampling would blur it),
    and no added sensor noise: the camera's noise was there at enrollment too, and adding it only in
    production is itself a change the drift watch rightly sees.
    """
    dy, dx = rng.integers(-2, 3, 2)
    h, w = img.shape[:2]
    padded = cv2.copyMakeBorder(img, 2, 2, 2, 2, cv2.BORDER_REFLECT)
    out = padded[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    return (out.astype(np.float32) * rng.uniform(0.97, 1.03)).clip(0, 255).astype(np.uint8)


def darker(img: np.ndarray, rng: np.random.Generator, factor: float = 0.7) -> np.ndarray:
    """A lighting drop: the same part at ``factor`` of the light."""
    return (jitter(img, rng).astype(np.float32) * factor).clip(0, 255).astype(np.uint8)


def knocked(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera knock: the part 6 % off-centre and rotated 2 degrees (edges filled by reflection)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 2.0, 1.0)
    m[:, 2] += (0.06 * w, 0.06 * h)
    return jitter(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT), rng)


def defocused(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lens knocked out of focus: Gaussian blur, sigma 1.5 px."""
    return jitter(cv2.GaussianBlur(img, (0, 0), 1.5), rng)


SHIFTS: dict[str, Transform] = {"lighting": darker, "knock": knocked, "defocus": defocused}


def stream(paths: list[Path], n: int, transform: Transform, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """``n`` parts cycling through ``paths`` (reshuffled each pass), each through ``transform``."""
    rng = np.random.default_rng(seed)
    cache: dict[Path, np.ndarray] = {}
    order: list[Path] = []
    for i in range(n):
        if not order:
            order = [paths[j] for j in rng.permutation(len(paths))]
        p = order.pop()
        if p not in cache:
            cache[p] = read_image(p)
        yield p.name, transform(cache[p], rng)


def scenario(name: str, split: ElpvSplit, n_before: int = 100, n_after: int = 100, n_stable: int = 2000,
             seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """The stream of a named scenario: ``n_before`` steady parts, then ``n_after`` drifted ones (``stable``:
    ``n_stable`` steady parts). Normals are the held-out mono cells, never the enrolled ones. Each part is
    named ``<position>_<cell>`` so a folder of them replays in stream order."""
    if name == "stable":
        parts = stream(split.held_out, n_stable, jitter, seed)
    elif name in (*SHIFTS, "changeover"):
        after = stream(split.poly, n_after, jitter, seed + 1) if name == "changeover" else \
            stream(split.held_out, n_after, SHIFTS[name], seed + 1)
        parts = itertools.chain(stream(split.held_out, n_before, jitter, seed), after)
    else:
        raise ValueError(f"scenario {name!r}: choose one of {SCENARIOS}")
    for i, (cell, img) in enumerate(parts):
        yield f"{i:05d}_{cell}", img


def write_stream(frames, out: str | Path) -> Path:
    """Save a stream as numbered PNGs (for ``lineguard stability --images`` or a station replay)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, img in frames:
        cv2.imwrite(str(out / f"{Path(name).stem}.png"), img[:, :, ::-1])
    return out
