"""Fast coreset selection for the PatchCore memory bank.

anomalib's ``KCenterGreedy`` scans every patch once per selected centre, so its
cost grows with (patches x selections): on a 2-core CPU that is hours for 200
images. Here the patches are split into random chunks that fit in the CPU
cache, and greedy k-center runs on each chunk; the union of the per-chunk
coresets is the bank. This is the composable-coreset scheme for k-center
(Malkomes et al., "Fast Distributed k-Center Clustering with Outliers on
Massive Data", NeurIPS 2015), which keeps a constant-factor guarantee while
cutting the work by the number of chunks.

>>> import torch
>>> x = torch.randn(5000, 16)
>>> idx = coreset_indices(x, ratio=0.1, chunk_size=1000, seed=0)
>>> len(idx)
500
"""

from __future__ import annotations

import math

import torch
from flows.progress import progress as progress_bar


def kcenter_greedy(x: torch.Tensor, k: int, start: int = 0, min_d: torch.Tensor | None = None,
                   stop_below: float | None = None) -> tuple[torch.Tensor, float]:
    """Greedy k-center on the rows of ``x``: (indices of up to ``k`` rows, farthest-first; the covering radius²).

    ``min_d`` (squared distance of each row to centres chosen before, e.g. an existing memory bank)
    continues a selection instead of starting one: the first pick is then the row farthest from them.
    ``stop_below`` ends it early once every row lies within that squared distance of a centre.
    """
    n = x.shape[0]
    k = min(k, n)
    sq = (x * x).sum(1)
    if min_d is None:
        min_d = torch.full((n,), float("inf"), dtype=x.dtype)
        idx = start
    else:
        min_d = min_d.to(x.dtype).clone()
        idx = int(torch.argmax(min_d))
    d = torch.empty_like(min_d)
    out = torch.empty(k, dtype=torch.long)
    picked = 0
    for i in range(k):
        if stop_below is not None and float(min_d[idx]) <= stop_below:
            break
        out[i] = idx
        picked += 1
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, one GEMV per step
        torch.addmv(sq, x, x[idx], alpha=-2.0, out=d)
        d += sq[idx]
        torch.minimum(min_d, d, out=min_d)
        idx = int(torch.argmax(min_d))
    return out[:picked], float(min_d[idx])


def coreset_indices(
    features: torch.Tensor,
    ratio: float,
    *,
    chunk_size: int = 16384,
    seed: int = 0,
    progress: bool = False,
    existing: torch.Tensor | None = None,
    existing_sq: torch.Tensor | None = None,
    stop_below: float | None = None,
    radius: list | None = None,
) -> torch.Tensor:
    """Indices of ``ceil(ratio * N)``-ish rows of ``features`` [N, D] that cover the rest.

    ``chunk_size`` rows are processed at a time (keep chunk_size x D x 4 bytes
    within the CPU's cache); each chunk contributes ``round(ratio * len(chunk))``
    centres, at least one. With ``existing`` (a memory bank already built) or
    ``existing_sq`` (each row's squared distance to it, already computed), the
    selection continues from it, and with ``stop_below`` it stops once the rows
    are covered as tightly as the bank covered its own normals: merging new
    normals adds only what the bank lacks (incremental recalibration). The
    covering radius² reached is appended to ``radius`` when given.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"coreset ratio {ratio} must be in (0, 1]")
    n = features.shape[0]
    if ratio == 1.0:
        return torch.arange(n)
    seed_d = existing_sq
    if seed_d is None and existing is not None and len(existing):
        seed_d = nearest_sq_distance(features, existing)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_chunks = max(1, math.ceil(n / chunk_size))
    chunks = torch.tensor_split(perm, n_chunks)
    selected, reached = [], 0.0
    with torch.no_grad():
        for chunk in progress_bar(chunks, desc="coreset", unit="chunk", enabled=progress):
            x = features[chunk].float().contiguous()
            k = max(1, round(ratio * len(chunk)))
            idx, r = kcenter_greedy(x, k, min_d=None if seed_d is None else seed_d[chunk], stop_below=stop_below)
            selected.append(chunk[idx])
            reached = max(reached, r)
    if radius is not None:
        radius.append(reached)
    return torch.cat(selected).sort().values


def nearest_sq_distance(x: torch.Tensor, bank: torch.Tensor, block: int = 8192) -> torch.Tensor:
    """Squared distance of each row of ``x`` to its nearest row of ``bank`` (blocked GEMMs).

    min_j |x - b_j|^2 = |x|^2 + min_j (|b_j|^2 - 2 x.b_j): the row's own norm is added after the
    reduction, so each block costs one GEMM with bias and one pass to find the minimum.
    """
    bank_t = bank.float().t().contiguous()
    bsq = (bank_t * bank_t).sum(0, keepdim=True)
    out = torch.empty(x.shape[0])
    with torch.no_grad():
        for i in range(0, x.shape[0], block):
            xb = x[i : i + block].float()
            partial = torch.addmm(bsq, xb, bank_t, alpha=-2.0).amin(1)
            out[i : i + block] = (partial + (xb * xb).sum(1)).clamp_min_(0)
    return out
