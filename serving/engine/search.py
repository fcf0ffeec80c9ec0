"""PatchCore's nearest-neighbour search outside the graph: an inverted-file (IVF) index over the memory bank.

The exact search is one GEMM of every test patch against the whole bank, ~90 % of the scoring path on a
CPU. The IVF index splits the bank into ``cells`` k-means cells; each patch is compared with the bank
patches of its ``probe`` nearest cells only (``probe / cells`` of the work). A patch whose true nearest
neighbour lies in an unprobed cell gets a distance that is too large, never too small, so the map can
only err upwards; export measures the error against the exact search and keeps the exact graph if it is
past the tolerance. Everything here is numpy: the station imports no torch.

>>> rng = np.random.default_rng(0)
>>> bank = rng.normal(size=(400, 8)).astype(np.float32)
>>> index = IvfIndex.build(bank, cells=4, probe=4)          # every cell probed: the exact search
>>> x = rng.normal(size=(10, 8)).astype(np.float32)
>>> dist, idx = index.nearest(x)
>>> exact = np.sqrt(((x[:, None] - bank[None]) ** 2).sum(-1))
>>> bool(np.allclose(dist, exact.min(1), atol=1e-4)), bool((idx == exact.argmin(1)).all())
(True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.engine.backends import Backend
from serving.engine.bundle import read_array
from serving.errors import BundleError

#: the files an index is saved as, under the bundle's ``search/`` folder
FILES = {"centroids": "centroids.npy", "bank": "bank.npy", "bank_sq": "bank_sq.npy", "offsets": "offsets.npy",
         "order": "order.npy", "fingerprint_mean": "fingerprint_mean.npy", "fingerprint_proj": "fingerprint_proj.npy"}
#: the files :class:`IvfIndex` itself is made of (the rest is the part fingerprint's projection)
INDEX_ROLES = ("centroids", "bank", "bank_sq", "offsets", "order")


def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [k, D], assignment [N]) of Lloyd's k-means from a seeded random start; an empty cell is
    re-seeded with the point farthest from its centroid (from a cell that keeps others), so every cell holds
    bank patches."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    cent = x[rng.choice(len(x), k, replace=False)].copy()
    xsq = (x * x).sum(1)
    for _ in range(iters + 1):
        d = xsq[:, None] - 2 * x @ cent.T + (cent * cent).sum(1)[None]
        assign = d.argmin(1)
        counts = np.bincount(assign, minlength=k)
        for j in np.flatnonzero(counts == 0):
            own = d[np.arange(len(x)), assign]
            own[counts[assign] <= 1] = -np.inf  # never empty another cell to fill this one
            far = int(own.argmax())
            counts[assign[far]] -= 1
            counts[j] += 1
            cent[j], assign[far] = x[far], j
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x)
        cent = sums / np.maximum(np.bincount(assign, minlength=k), 1)[:, None]
    return cent.astype(np.float32), assign


@dataclass
class IvfIndex:
    """The memory bank sorted by k-means cell, with the cells' centroids and where each cell starts."""

    centroids: np.ndarray  #: [C, D]
    bank: np.ndarray  #: [N, D], sorted by cell
    bank_sq: np.ndarray  #: [N] squared norms of ``bank``
    offsets: np.ndarray  #: [C + 1] start of each cell in ``bank``
    order: np.ndarray  #: [N] original bank index of each sorted row (the explanation's patch index)
    probe: int  #: cells searched per patch

    @classmethod
    def build(cls, bank: np.ndarray, cells: int, probe: int, seed: int = 0) -> "IvfIndex":
        """Index ``bank`` [N, D] in ``cells`` k-means cells (at most N // 8), ``probe`` of them searched."""
        bank = np.ascontiguousarray(bank, np.float32)
        cells = max(1, min(cells, len(bank) // 8))
        cent, assign = kmeans(bank, cells, seed=seed)
        order = np.argsort(assign, kind="stable")
        sorted_bank = np.ascontiguousarray(bank[order])
        offsets = np.searchsorted(assign[order], np.arange(cells + 1)).astype(np.int64)
        return cls(cent, sorted_bank, (sorted_bank * sorted_bank).sum(1), offsets, order.astype(np.int64),
                   max(1, min(probe, cells)))

    @property
    def cells(self) -> int:
        """Number of k-means cells."""
        return len(self.centroids)

    def save(self, folder: Path) -> list[Path]:
        """Write the index as ``.npy`` files in ``folder``; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for role in INDEX_ROLES:
            np.save(folder / FILES[role], getattr(self, role))
            out.append(folder / FILES[role])
        return out

    @classmethod
    def load(cls, files: Path | dict[str, Path], probe: int) -> "IvfIndex":
        """Read an index saved by :meth:`save` (``files``: role -> path, or the folder holding :data:`FILES`) and
        :meth:`check` it."""
        if isinstance(files, Path):
            files = {role: files / name for role, name in FILES.items()}
        arrays = {role: read_array(files[role]) for role in INDEX_ROLES}
        index = cls(**arrays, probe=probe)
        index.check(files)
        index.probe = max(1, min(probe, index.cells))  # more probes than cells: every cell, the exact search
        return index

    def check(self, files: dict[str, Path]) -> None:
        """Raise :class:`BundleError` naming the file unless the arrays fit together (shapes, dtypes, finite
        values, squared norms that are the bank's, non-empty cells tiling the bank, a permutation of the bank):
        a bad index must stop the load, never a part in the middle of a shift. The rules run in order, each
        relying on those before it."""
        bank, cent, sq, offsets, order = self.bank, self.centroids, self.bank_sq, self.offsets, self.order
        n, dim = bank.shape if bank.ndim == 2 else (0, 0)
        cells = len(cent) if cent.ndim else 0
        norms: list[np.ndarray] = []  # the bank's row norms, computed once by the first rule that passes its shape

        def bank_ok() -> bool:
            if not (bank.ndim == 2 and bank.dtype == np.float32 and n > 0):
                return False
            norms.append(np.einsum("ij,ij->i", bank, bank))
            return bool(np.isfinite(norms[0]).all())  # a NaN or inf anywhere in a row makes its norm one

        rules: list[tuple[str, Callable[[], bool], str]] = [
            ("bank", bank_ok, "a finite float32 [N, D] array"),
            ("centroids", lambda: cent.ndim == 2 and cells > 0 and cent.shape[1] == dim
             and cent.dtype == np.float32 and bool(np.isfinite(cent).all()), f"a finite float32 [C, {dim}] array"),
            ("bank_sq", lambda: sq.shape == (n,) and sq.dtype == np.float32
             and bool(np.allclose(sq, norms[0], rtol=1e-4, atol=1e-6)), f"float32 [{n}], the bank's squared norms"),
            ("offsets", lambda: offsets.shape == (cells + 1,) and offsets.dtype.kind == "i"
             and offsets[0] == 0 and offsets[-1] == n and bool(np.all(np.diff(offsets) > 0)),
             f"{cells + 1} strictly rising cell bounds from 0 to {n} (no empty cell)"),
            ("order", lambda: order.shape == (n,) and order.dtype.kind == "i"
             and bool(np.array_equal(np.sort(order), np.arange(n))), f"a permutation of 0..{n - 1}"),
        ]
        for role, ok, want in rules:
            if not ok():
                raise BundleError(f"{files[role]}: not {want} consistent with the rest of the search index; "
                                  "re-export the bundle")

    def nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance [P], original bank index [P]) of each patch feature in ``x`` [P, D] to its nearest probed
        bank patch. The (patch, cell) pairs are sorted by cell, so each cell is one small GEMM over a slice;
        each pair's best is then reduced per patch in one pass (a Python loop over cells, a few calls each)."""
        x = np.ascontiguousarray(x, np.float32)
        n, k = len(x), self.probe
        cd = (self.centroids * self.centroids).sum(1)[None] - 2 * x @ self.centroids.T
        probe = np.argpartition(cd, k - 1, axis=1)[:, :k] if k < self.cells else np.broadcast_to(
            np.arange(self.cells), (n, self.cells))
        by_cell = np.argsort(probe.ravel(), kind="stable")  # pair p*k+q -> position in cell order
        bounds = np.searchsorted(probe.ravel()[by_cell], np.arange(self.cells + 1)).tolist()
        xs = x[by_cell // k] * np.float32(-2.0)  # |b|^2 - 2 x.b: the GEMM gives the -2 x.b part
        value = np.empty(n * k, np.float32)
        index = np.empty(n * k, np.int64)
        offsets = self.offsets.tolist()
        for j in range(self.cells):
            a, b = bounds[j], bounds[j + 1]
            if a == b:
                continue
            lo, hi = offsets[j], offsets[j + 1]
            d = xs[a:b] @ self.bank[lo:hi].T
            d += self.bank_sq[lo:hi]
            i = d.argmin(1)
            value[a:b] = np.take_along_axis(d, i[:, None], 1)[:, 0]
            index[a:b] = i + lo
        pair_value, pair_index = np.empty_like(value), np.empty_like(index)
        pair_value[by_cell], pair_index[by_cell] = value, index
        best = pair_value.reshape(n, k).argmin(1)
        rows = np.arange(n)
        dist = np.sqrt(np.maximum(pair_value.reshape(n, k)[rows, best] + (x * x).sum(1), 0.0))
        return dist, self.order[pair_index.reshape(n, k)[rows, best]]


@functools.lru_cache(maxsize=16)
def map_operator(n_in: int, n_out: int, sigma: float = 4.0) -> np.ndarray:
    """[n_out, n_in] matrix of one axis of anomalib's PatchCore map: nearest upsampling from ``n_in`` patches to
    ``n_out`` pixels, then its Gaussian blur (sigma 4, 33 taps, reflected borders). Both are linear and act on
    the two axes apart, so the whole map is ``op(h, H) @ patches @ op(w, W).T``: two small GEMMs (~1.6 M MAC at
    28 -> 224) instead of an upsampled 224x224 map blurred with two 33-tap passes. Read-only (cached)."""
    size = 2 * int(4.0 * sigma + 0.5) + 1
    t = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    op = np.zeros((n_out, n_in))
    for i in range(n_out):
        for k in range(size):
            j = i + k - size // 2
            while not 0 <= j < n_out:  # reflect about the edge pixels (OpenCV's REFLECT_101, torch's "reflect")
                j = 0 if n_out == 1 else (-j if j < 0 else 2 * (n_out - 1) - j)
            op[i, j * n_in // n_out] += g[k]  # pixel j comes from patch floor(j * in / out), torch's nearest
    op = op.astype(np.float32)
    op.flags.writeable = False
    return op


def anomaly_map(patch: np.ndarray, height: int, width: int) -> np.ndarray:
    """[h, w] patch distances -> [height, width] map: nearest upsampling, then anomalib's Gaussian blur
    (sigma 4, 33 taps, reflect borders), as the exported graph computes it (:func:`map_operator`)."""
    h, w = patch.shape
    return map_operator(h, height) @ patch.astype(np.float32, copy=False) @ map_operator(w, width).T


class IvfBackend(Backend):
    """The scoring path with the search outside the graph: the backbone graph (ONNX Runtime), then
    :class:`IvfIndex`, the map and the fingerprint in numpy. Returns what the whole graph returns:
    ``[score [B], anomaly_map [B,1,H,W], patch_match [B,h,w], embedding [B,E]]``."""

    name = "onnxruntime+ivf"

    def __init__(self, features, index: IvfIndex, fingerprint_mean: np.ndarray, fingerprint_proj: np.ndarray,
                 height: int, width: int) -> None:
        self.features, self.index = features, index
        self.fp_mean = np.asarray(fingerprint_mean, np.float32)
        self.fp_proj = np.asarray(fingerprint_proj, np.float32)
        self.height, self.width = height, width
        self.providers = features.providers
        self.output_names = ["score", "anomaly_map", "patch_match", "embedding"]

    @property
    def cached(self) -> bool:
        """True when the backbone graph came from the optimised-graph cache."""
        return self.features.cached

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Score a float32 NCHW batch, one image at a time through the index."""
        emb = self.features.run(batch)[0]  # [B, D, h, w]
        b, dim, h, w = emb.shape
        if dim != self.index.bank.shape[1]:  # a graph without static output dims escaped the check at load
            raise BundleError(f"the backbone graph gives {dim}-dimensional patches, the search index holds "
                              f"{self.index.bank.shape[1]}; re-export the bundle")
        scores = np.zeros(b, np.float32)
        maps = np.zeros((b, 1, self.height, self.width), np.float32)
        match = np.zeros((b, h, w), np.int64)
        for i in range(b):
            dist, idx = self.index.nearest(emb[i].reshape(dim, -1).T)
            maps[i, 0] = anomaly_map(dist.reshape(h, w), self.height, self.width)
            scores[i], match[i] = maps[i, 0].max(), idx.reshape(h, w)
        pooled = emb.mean(axis=(2, 3))
        prints = (pooled - self.fp_mean) @ self.fp_proj if self.fp_proj.size else pooled[:, :0]
        return [scores, maps, match, prints.astype(np.float32)]


def search_files(bundle) -> dict[str, Path]:
    """role -> path of the bundle's index files: exactly the :data:`FILES` roles, each a file the manifest lists
    (so hashed and signed; a folder name that ``load_bundle`` accepts for other sections is not enough here)."""
    spec, root = bundle.manifest.search, bundle.root
    if set(spec.files) != set(FILES):
        raise BundleError(f"{root}: manifest search.files has roles {sorted(spec.files)}, the station needs exactly "
                          f"{sorted(FILES)}; re-export the bundle")
    unlisted = sorted(name for name in spec.files.values() if name not in bundle.manifest.files)
    if unlisted:
        raise BundleError(f"{root}: manifest search.files {unlisted} are not files listed under 'files' "
                          "(unverifiable); re-export the bundle")
    return {role: bundle.path(name) for role, name in spec.files.items()}


def open_search(bundle, threads: int | None = None) -> IvfBackend:
    """The bundle's :class:`IvfBackend` (its manifest has a ``search`` section): the backbone graph on ONNX
    Runtime's CPU provider, the index read from the verified ``search/`` files."""
    from serving.engine.backends import OrtBackend

    spec, m = bundle.manifest.search, bundle.manifest
    files = search_files(bundle)
    index = IvfIndex.load(files, probe=spec.probe)
    if spec.cells != index.cells:
        raise BundleError(f"{files['centroids']}: {index.cells} cells, the manifest says {spec.cells}; re-export")
    fp_mean, fp_proj = (read_array(files[role]) for role in ("fingerprint_mean", "fingerprint_proj"))
    dim = index.bank.shape[1]
    if not (fp_mean.shape == (dim,) and fp_proj.ndim == 2 and fp_proj.shape[0] == dim
            and fp_mean.dtype.kind == fp_proj.dtype.kind == "f" and np.isfinite(fp_mean).all()
            and np.isfinite(fp_proj).all()):
        raise BundleError(f"{files['fingerprint_proj']}: fingerprint arrays {fp_mean.shape} / {fp_proj.shape} are not "
                          f"finite float arrays fitting the bank's {dim} dimensions; re-export the bundle")
    features = OrtBackend(bundle.path(spec.graph), providers=["CPUExecutionProvider"], threads=threads,
                          sha256=m.files[spec.graph].sha256, spin=False)
    width = features.session.get_outputs()[0].shape
    if len(width) != 4 or (isinstance(width[1], int) and width[1] != dim):
        raise BundleError(f"{bundle.path(spec.graph)}: the backbone graph gives patch features of shape {width}, the "
                          f"index holds {dim}-dimensional patches; re-export the bundle")
    return IvfBackend(features, index, fp_mean, fp_proj, m.input.height, m.input.width)
