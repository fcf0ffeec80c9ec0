"""What the anomaly map's and the image score's post-processing are worth, from one set of patch distances.

The search gives each patch its distance to the nearest enrolled patch; the map (nearest upsampling, Gaussian
blur sigma 4, as anomalib's PatchCore) and the image score (the map's maximum) are made from those. This scores the
test set once and prints, on the same distances:

- pixel AUROC (where the set has masks) for nearest and bilinear upsampling, blur sigma 0-8;
- image AUROC for the blurred map's maximum (sigma 0-8), the mean of the top-k patches, a k x k mean-pooled
  maximum, and anomalib's PatchCore re-weighting of the maximum by its bank neighbourhood (9 neighbours).

    .venv/bin/python benchmarks/bench_map_scoring.py --bundle BUNDLE --data DATA [--json]

``BUNDLE`` is an engineer's bundle folder (with ``enrollment.pt``; ``lineguard enroll --no-export`` is enough).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIGMAS = (0, 2, 3, 4, 6, 8)


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur as the station's map has it (33 taps at sigma 4, reflected borders); sigma 0: unchanged."""
    if not sigma:
        return a
    k = 2 * int(4 * sigma + 0.5) + 1
    return cv2.GaussianBlur(a, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)


def upsample(d: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """[h, w] patch distances at [height, width]: ``nearest`` (anomalib's and the station's) or ``bilinear``."""
    interp = cv2.INTER_NEAREST_EXACT if mode == "nearest" else cv2.INTER_LINEAR
    return cv2.resize(d.astype(np.float32), (width, height), interpolation=interp)


def distances(bundle: Path, data: Path) -> dict:
    """Patch distances [N, h, w] of every test image, their labels and masks, and what is needed to re-weight."""
    import torch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from flows.anomaly.enroll import load_enrollment, restore_model
    from flows.anomaly.model import AnomalyScorer, patch_embedding
    from flows.data.dataset import load_tensors
    from flows.params import Params
    from serving.engine.preprocess import InputSpec, Roi, crop_roi, resize
    from serving.errors import DatasetError
    from serving.images import list_images, read_mask

    ckpt = load_enrollment(bundle)
    model = restore_model(ckpt)
    if not isinstance(model, PatchcoreModel):
        raise DatasetError(f"{bundle}: a PaDiM bundle has no patch distances to post-process; use a PatchCore one")
    spec, params = InputSpec.model_validate(ckpt["input"]), Params.model_validate(ckpt["params"])
    roi = Roi.parse(params.model.roi) if params.model.roi else None
    test = data / "test"
    if not test.is_dir():
        raise DatasetError(f"{data}: no test/ folder (test/good and test/<defect type> are needed)")
    paths = sorted(q for d in sorted(p for p in test.iterdir() if p.is_dir()) for q in list_images(d))
    x, paths, _ = load_tensors(paths, spec, roi, skip_corrupt=True, desc="test images")
    scorer, bank = AnomalyScorer(model), model.memory_bank.float()
    dist, reweighted = [], []
    with torch.inference_mode():
        for i in range(0, len(x), 16):
            emb = patch_embedding(model, torch.from_numpy(x[i:i + 16]))
            d, match = scorer.nearest(emb)
            dist.append(d.numpy())
            flat = emb.permute(0, 2, 3, 1).reshape(emb.shape[0], -1, emb.shape[1])
            for f, dj, mj in zip(flat, d.reshape(len(flat), -1), match.reshape(len(flat), -1)):
                top = int(dj.argmax())  # anomalib: the worst patch's score, down-weighted where its match is crowded
                support = torch.cdist(bank[mj[top]][None], bank)[0].topk(9, largest=False).indices
                w = 1 - torch.softmax(torch.cdist(f[top][None], bank[support])[0], 0)[0]
                reweighted.append(float(w * dj[top]))
    labels = np.array([0 if q.parent.name == "good" else 1 for q in paths])
    masks = None
    if (data / "ground_truth").is_dir():
        masks = np.stack([np.zeros((spec.height, spec.width), bool) if q.parent.name == "good" else
                          resize(crop_roi(read_mask(data / "ground_truth" / q.parent.name / f"{q.stem}_mask.png")
                                          .astype(np.uint8), roi), spec.height, spec.width, nearest=True) > 0
                          for q in paths])
    return {"dist": np.concatenate(dist), "labels": labels, "masks": masks, "reweighted": np.array(reweighted),
            "size": (spec.height, spec.width)}


def table(d: dict) -> dict:
    """Pixel and image AUROC of each variant."""
    import torch
    import torch.nn.functional as F

    from flows.evaluation.metrics import auroc

    dist, labels, masks, (h, w) = d["dist"], d["labels"], d["masks"], d["size"]
    out = {"pixel": {}, "image": {}}
    for mode in ("nearest", "bilinear"):
        for s in SIGMAS:
            maps = np.stack([blur(upsample(p, h, w, mode), s) for p in dist])
            if masks is not None:
                out["pixel"][f"{mode}, sigma {s}"] = auroc(masks, maps)
            if mode == "nearest":
                out["image"][f"blurred map max, sigma {s}"] = auroc(labels, maps.reshape(len(maps), -1).max(1))
    ranked = -np.sort(-dist.reshape(len(dist), -1), 1)
    for k in (1, 3, 5, 10, 20):
        out["image"][f"top-{k} patch mean"] = auroc(labels, ranked[:, :k].mean(1))
    for k in (3, 5):
        pooled = F.avg_pool2d(torch.from_numpy(dist)[:, None], k, 1, k // 2, count_include_pad=False)
        out["image"][f"{k}x{k} mean-pooled max"] = auroc(labels, pooled.reshape(len(dist), -1).max(1).values.numpy())
    out["image"]["anomalib re-weighted max (9 neighbours)"] = auroc(labels, d["reweighted"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="bundle folder with enrollment.pt (PatchCore)")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder with test/ (and ground_truth/)")
    ap.add_argument("--json", action="store_true", help="print the table as JSON")
    args = ap.parse_args(argv)
    res = table(distances(args.bundle, args.data))
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    for kind in ("pixel", "image"):
        for name, v in res[kind].items():
            print(f"{kind:5s} AUROC  {name:42s} {v:.4f}" if v is not None else f"{kind:5s} AUROC  {name:42s} -")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
