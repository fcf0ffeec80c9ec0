"""The anomaly models: anomalib's PatchCore and PaDiM, wrapped for export.

:func:`build_model` makes anomalib's torch model with offline backbone weights.
:class:`AnomalyScorer` is the whole scoring path as one module -- backbone,
patch embedding, distance to the normal model, anomaly map, image score -- with a
dynamic batch dimension, so it exports to ONNX in one piece. It also returns,
for PatchCore, which memory-bank patch each test patch matched
(the explanation anomalib computes and throws away).

>>> m = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
>>> type(m).__name__
'PatchcoreModel'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from anomalib.models.image.padim.torch_model import PadimModel
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

import timm

from flows.progress import progress
from flows.anomaly.backbone import backbone_state_dict, check_backbone, load_into_feature_extractor
from serving.engine.search import map_operator
from serving.errors import ConfigError

OUTPUT_NAMES = ("score", "anomaly_map", "patch_match", "embedding")


def build_model(
    algorithm: str,
    backbone: str,
    layers: Sequence[str],
    *,
    weights: str | None = None,
    padim_features: int = 100,
    seed: int = 0,
) -> PatchcoreModel | PadimModel:
    """anomalib's torch model for ``algorithm`` with pretrained ``backbone`` weights loaded."""
    check_layers(backbone, layers)
    torch.manual_seed(seed)  # PaDiM's random feature subset
    if algorithm == "patchcore":
        model = PatchcoreModel(layers=list(layers), backbone=backbone, pre_trained=False)
    elif algorithm == "padim":
        model = PadimModel(layers=list(layers), backbone=backbone, pre_trained=False, n_features=padim_features)
    else:
        raise ValueError(f"model {algorithm!r}: choose 'patchcore' or 'padim'")
    load_into_feature_extractor(model.feature_extractor.feature_extractor, backbone_state_dict(backbone, weights))
    return model.eval()


def check_layers(backbone: str, layers: Sequence[str]) -> None:
    """Raise :class:`ConfigError` unless every layer is a feature stage of ``backbone``."""
    check_backbone(backbone)
    available = [i["module"] for i in timm.create_model(backbone, pretrained=False, features_only=True).feature_info.info]
    unknown = [layer for layer in layers if layer not in available]
    if unknown or not layers:
        raise ConfigError(f"model.layers {list(layers)}: {unknown or 'empty'} not feature stages of {backbone}; "
                          f"choose from {available}")
    ordered = sorted(set(layers), key=available.index)
    if list(layers) != ordered:
        # anomalib pairs the names with timm's outputs in the order given, while timm returns them shallow to deep:
        # another order labels one stage's features with another's name, without an error
        raise ConfigError(f"model.layers {list(layers)}: list each stage once, from shallow to deep: {ordered}")


def patch_embedding(model: PatchcoreModel | PadimModel, x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, D, h, w]: the model's multi-layer patch features."""
    features = model.feature_extractor(x)
    if isinstance(model, PatchcoreModel):
        features = {k: model.feature_pooler(v) for k, v in features.items()}
    return model.generate_embedding(features)


class PatchEmbedding(torch.nn.Module):
    """images [B,3,H,W] -> patch embeddings [B,D,h,w]: the backbone and its feature pooling alone, without the
    nearest-neighbour search or the map. Exported beside the scorer as the latency floor the station's
    benchmark compares the whole path with."""

    def __init__(self, model: PatchcoreModel | PadimModel) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_embedding(self.model, x)


def map_matrices(grid, size, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The anomaly map's row and column operators (:func:`serving.engine.search.map_operator`, copied out of its
    read-only cache) for a patch ``grid`` (h, w) and a map ``size`` (H, W): ``map = rows @ patches @ cols.T``."""
    rows, cols = (torch.tensor(map_operator(int(n), int(m)), device=device, dtype=dtype) for n, m in zip(grid, size))
    return rows, cols


class AnomalyScorer(torch.nn.Module):
    """images [B,3,H,W] -> (score [B], anomaly_map [B,1,H,W], patch_match [B,h,w], embedding [B,E]).

    ``embedding`` is the part's mean patch feature, centred and projected onto the principal axes of
    the enrolled normals: a compact fingerprint the station watches for drift. ``bank`` (PatchCore)
    defaults to the model's memory bank; enrollment passes fold banks to score unseen normals.
    ``size`` (H, W), where the input size is fixed, keeps the map's two matrices as buffers: they then move
    with the module to another device (a trace holds no host constant) and nothing is built per call.
    """

    def __init__(self, model: PatchcoreModel | PadimModel, embed_mean: torch.Tensor | None = None,
                 embed_proj: torch.Tensor | None = None, bank: torch.Tensor | None = None,
                 size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        if isinstance(model, PatchcoreModel):
            bank = (model.memory_bank if bank is None else bank).float()
            # Bank stored transposed with its squared norms, so the search is one
            # GEMM with bias plus one reduction: |x-m|^2 = |x|^2 + (|m|^2 - 2 x.m).
            self.register_buffer("bank_t", bank.t().contiguous())
            self.register_buffer("bank_sq", (bank * bank).sum(1, keepdim=True).t().contiguous())
        self.register_buffer("embed_mean", embed_mean if embed_mean is not None else torch.zeros(0))
        self.register_buffer("embed_proj", embed_proj if embed_proj is not None else torch.zeros(0, 0))
        rows, cols = torch.zeros(0, 0), torch.zeros(0, 0)
        if size is not None and isinstance(model, PatchcoreModel):
            with torch.no_grad():
                h, w = patch_embedding(model, torch.zeros(1, 3, *size)).shape[-2:]
            rows, cols = map_matrices((h, w), size)
        self.register_buffer("map_rows", rows)
        self.register_buffer("map_cols", cols)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = patch_embedding(self.model, x)
        score, amap, match = self.score_embedding(emb, x.shape[-2:])
        return score, amap, match, self.fingerprint(emb)

    def fingerprint(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] patch embeddings -> [B, E] projected mean (E = 0 before the projection is fitted)."""
        pooled = emb.mean(dim=(2, 3))
        if self.embed_proj.numel() == 0:
            return pooled[:, :0]
        return (pooled - self.embed_mean) @ self.embed_proj

    def nearest(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance [B,h,w], bank index [B,h,w]) of each patch's nearest memory-bank patch (exact search).

        One GEMM with bias, then TopK(1): the minimum and its index in one pass over the distance matrix
        (``min(1)`` exports as ReduceMin + ArgMin, two passes; 5-9 % of the whole path on a 16k bank). Slicing the
        search by patch rows was measured and dropped: ONNX Runtime prepacks the bank once per Gemm node, so
        every slice held its own copy (slower session creation, several times the memory).
        """
        _, dim, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
        partial, match = torch.addmm(self.bank_sq, flat, self.bank_t, alpha=-2.0).topk(1, dim=1, largest=False)
        dist = (partial[:, 0] + (flat * flat).sum(1)).clamp_min(0.0).sqrt()
        return dist.reshape(-1, h, w), match[:, 0].reshape(-1, h, w)

    def patch_map(self, patch: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
        """(score [B], anomaly_map [B,1,H,W]) from patch distances [B,1,h,w] to the bank (PatchCore)."""
        # anomalib's compute_anomaly_map (nearest upsample, then the sigma-4 blur) as one matrix per axis: constants
        # of the graph, two small MatMuls instead of a Resize, two 33-tap convolutions and their layout changes
        (h, w), (height, width) = patch.shape[-2:], size
        if tuple(self.map_rows.shape) == (height, h) and tuple(self.map_cols.shape) == (width, w):
            rows, cols = self.map_rows, self.map_cols
        else:
            rows, cols = map_matrices((h, w), size, device=patch.device, dtype=patch.dtype)
        amap = rows @ patch @ cols.t()
        return amap.amax(dim=(1, 2, 3)), amap

    def score_embedding(self, emb: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(score, anomaly_map, patch_match) from patch embeddings [B, D, h, w], maps at ``size``."""
        model = self.model
        _, dim, h, w = emb.shape
        if isinstance(model, PatchcoreModel):
            dist, match = self.nearest(emb)
            return (*self.patch_map(dist[:, None], size), match)
        else:
            amap = model.anomaly_map_generator(embedding=emb, mean=model.gaussian.mean,
                                               inv_covariance=model.gaussian.inv_covariance, image_size=size)
            # PaDiM has no bank: the "match" is the patch's own Gaussian, i.e. its position.
            match = torch.arange(h * w, device=emb.device).reshape(1, h, w).expand(emb.shape[0], h, w)
        return amap.amax(dim=(1, 2, 3)), amap, match


def fit_fingerprint(pooled: torch.Tensor, dims: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], projection [D, E]) of the normals' pooled features [N, D]: their first E principal axes,
    scaled by one constant so the normals' fingerprints have unit RMS radius (E <= number of normals - 1).

    Not whitened per axis: whitening blows up the weak trailing axes, on which unseen normals then land
    far from the enrolled ones, and the drift watch would alarm on a steady line.
    """
    pooled = pooled.float()
    mean = pooled.mean(0)
    centred = pooled - mean
    e = max(1, min(dims, pooled.shape[0] - 1, pooled.shape[1]))
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    radius = float((s[:e] ** 2).sum() / max(pooled.shape[0], 1)) ** 0.5
    return mean, v[:e].t() / max(radius, 1e-6)


def embed_batches(model: PatchcoreModel | PadimModel, x: torch.Tensor, batch_size: int = 16,
                  show_progress: bool = False) -> torch.Tensor:
    """Patch embeddings of a stack of preprocessed images, batch by batch."""
    out = []
    starts = range(0, len(x), batch_size)
    with torch.inference_mode():
        for i in progress(starts, desc="embed", unit="batch", enabled=show_progress):
            out.append(patch_embedding(model, x[i : i + batch_size]))
    return torch.cat(out)


def score_batches(scorer: AnomalyScorer, x: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [N], maps [N,H,W]) for a stack of preprocessed images."""
    scores, maps = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            s, m, _, _ = scorer(x[i : i + batch_size])
            scores.append(s)
            maps.append(m[:, 0])
    return torch.cat(scores), torch.cat(maps)


def score_embeddings(scorer: AnomalyScorer, emb: torch.Tensor, size, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N], maps [N,H,W]) from patch embeddings already computed (no second backbone pass)."""
    scores, maps = [], []
    with torch.inference_mode():
        for i in range(0, len(emb), batch_size):
            s, m, _ = scorer.score_embedding(emb[i : i + batch_size], size)
            scores.append(s)
            maps.append(m[:, 0])
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()
