"""Enroll a station: learn "good" from normal images and calibrate its thresholds.

Good images are split (seeded) into an enrollment set, which builds the model,
and a held-out set, which only calibrates. The result is saved as
``enrollment.pt`` inside the bundle folder: the training-side state that export
turns into ONNX and that recalibration extends.

>>> result = enroll("data/elpv", Params(), Path("models/elpv/bundle"))  # doctest: +SKIP
>>> result.bank_size, round(result.timings["enroll_s"])                  # doctest: +SKIP
(16384, 25)
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from flows.anomaly.calibrate import calibrate
from flows.anomaly.coreset import coreset_indices
from flows.data.dataset import dataset_hash, load_tensors, scan_dataset
from flows.anomaly.model import AnomalyScorer, build_model, embed_batches, score_batches
from flows.params import Params
from serving.engine.bundle import Thresholds
from serving.errors import DatasetError
from serving.engine.preprocess import InputSpec, Roi, resize

ENROLLMENT_FILE = "enrollment.pt"


@dataclass
class EnrollResult:
    """What enrollment produced, with the figures worth reporting."""

    path: Path
    thresholds: Thresholds
    bank_size: int
    n_enroll: int
    n_holdout: int
    dataset_hash: str
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    holdout_scores: np.ndarray | None = None
    holdout_maps: np.ndarray | None = None
    holdout_crops: np.ndarray | None = None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def split_holdout(paths: list[Path], fraction: float, minimum: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded split of good images into (enroll, holdout); the holdout gets at least ``minimum``."""
    n_hold = max(minimum, round(fraction * len(paths)))
    if len(paths) - n_hold < 2:
        raise DatasetError(
            f"{len(paths)} good images cannot give {n_hold} held-out for calibration and still leave "
            "images to enroll; add good images or lower calibration.min_holdout"
        )
    order = np.random.default_rng(seed).permutation(len(paths))
    hold = sorted(paths[i] for i in order[:n_hold])
    keep = sorted(paths[i] for i in order[n_hold:])
    return keep, hold


def _to_uint8_crops(x: np.ndarray, spec: InputSpec, size: int | None = None) -> np.ndarray:
    """Invert the normalisation: engine inputs back to uint8 RGB crops (optionally resized)."""
    img = x.transpose(0, 2, 3, 1) * np.asarray(spec.std, np.float32) + np.asarray(spec.mean, np.float32)
    img = (img / spec.scale).round().clip(0, 255).astype(np.uint8)
    if size:
        img = np.stack([resize(i, size, size) for i in img])
    return img


def enroll(data_dir: str | Path, params: Params, out_dir: str | Path, *, progress: bool = True) -> EnrollResult:
    """Build the anomaly model from ``data_dir/train/good`` and calibrate it; save ``out_dir/enrollment.pt``."""
    t0 = time.perf_counter()
    mp, cp = params.model, params.calibration
    spec = InputSpec(height=mp.input_size, width=mp.input_size)
    roi = Roi.parse(mp.roi)
    ds = scan_dataset(data_dir, min_train=params.enroll.min_good_images)
    enroll_paths, hold_paths = split_holdout(ds.train, cp.holdout_fraction, cp.min_holdout, mp.seed)
    model = build_model(mp.algorithm, mp.backbone, mp.layers, weights=mp.weights,
                        padim_features=mp.padim_features, seed=mp.seed)

    x_enroll, enroll_paths, bad1 = load_tensors(enroll_paths, spec, roi, skip_corrupt=params.enroll.skip_corrupt, desc="load enroll")
    x_hold, hold_paths, bad2 = load_tensors(hold_paths, spec, roi, skip_corrupt=params.enroll.skip_corrupt, desc="load holdout")
    skipped = [f"{p}: {why}" for p, why in bad1 + bad2]
    if len(enroll_paths) < params.enroll.min_good_images - len(hold_paths):
        raise DatasetError(f"{data_dir}: only {len(enroll_paths)} readable images left to enroll after skipping corrupt files")
    t_load = time.perf_counter()

    emb = embed_batches(model, torch.from_numpy(x_enroll), mp.batch_size, show_progress=progress)
    t_embed = time.perf_counter()
    bank_source = np.zeros((0, 3), np.int32)
    if isinstance(model, PatchcoreModel):
        n, dim, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
        idx = coreset_indices(flat, mp.coreset_ratio, chunk_size=mp.coreset_chunk, seed=mp.seed, progress=progress)
        model.memory_bank = flat[idx]  # advanced indexing already copies
        img_i, rest = np.divmod(idx.numpy(), h * w)
        bank_source = np.stack([img_i, *np.divmod(rest, w)], axis=1).astype(np.int32)
        bank_size = int(len(idx))
    else:
        model.memory_bank = [emb]
        model.fit()
        bank_size = int(emb.shape[0])
    del emb
    t_bank = time.perf_counter()

    scorer = AnomalyScorer(model)
    scores, maps = score_batches(scorer, torch.from_numpy(x_hold))
    scores, maps = scores.numpy(), maps.numpy()
    thresholds = calibrate(scores, maps, target_frr=cp.target_frr, pixel_fpr=cp.pixel_fpr)
    t_cal = time.perf_counter()

    timings = {"load_s": t_load - t0, "embed_s": t_embed - t_load, "coreset_s": t_bank - t_embed,
               "calibrate_s": t_cal - t_bank, "enroll_s": t_bank - t_load, "total_s": t_cal - t0}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dhash = dataset_hash(enroll_paths + hold_paths)
    torch.save(
        {
            "format": 1,
            "params": params.model_dump(mode="json"),
            "input": spec.model_dump(mode="json"),
            "roi": roi.model_dump() if roi else None,
            "state_dict": model.state_dict(),
            "bank_source": bank_source,
            "enroll_files": [p.name for p in enroll_paths],
            "holdout_files": [p.name for p in hold_paths],
            "thumbnails": _to_uint8_crops(x_enroll, spec, params.export.thumbnail_px),
            "parity_crops": _to_uint8_crops(x_enroll[: params.export.parity_images], spec),
            "thresholds": thresholds.model_dump(mode="json"),
            "holdout_scores": scores,
            "dataset_hash": dhash,
            "timings": timings,
            "mlflow_run_id": None,
        },
        out / ENROLLMENT_FILE,
    )
    return EnrollResult(path=out / ENROLLMENT_FILE, thresholds=thresholds, bank_size=bank_size,
                        n_enroll=len(enroll_paths), n_holdout=len(hold_paths), dataset_hash=dhash,
                        skipped=skipped, timings=timings, peak_rss_mb=peak_rss_mb(),
                        holdout_scores=scores, holdout_maps=maps, holdout_crops=_to_uint8_crops(x_hold, spec))


def load_enrollment(path: str | Path) -> dict:
    """Read ``enrollment.pt`` (a file, or the bundle folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / ENROLLMENT_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: no enrollment found; run `lineguard enroll` first")
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_model(ckpt: dict):
    """Rebuild anomalib's model from an enrollment checkpoint (memory bank / Gaussian included)."""
    mp = Params.model_validate(ckpt["params"]).model
    model = build_model(mp.algorithm, mp.backbone, mp.layers, weights=mp.weights,
                        padim_features=mp.padim_features, seed=mp.seed)
    state = ckpt["state_dict"]
    for name, tensor in state.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        buf = module._buffers.get(attr)
        if buf is not None and buf.shape != tensor.shape:
            module._buffers[attr] = torch.empty_like(tensor)
    model.load_state_dict(state)
    return model.eval()


def set_run_id(path: str | Path, run_id: str) -> None:
    """Record the MLflow run id in an enrollment checkpoint (export copies it into the manifest)."""
    path = Path(path)
    ckpt = load_enrollment(path)
    ckpt["mlflow_run_id"] = run_id
    torch.save(ckpt, path if path.is_file() else path / ENROLLMENT_FILE)
