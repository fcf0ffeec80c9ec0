"""Enroll a station: learn "good" from normal images, score every one of them as unseen, calibrate.

The good images are split (seeded) into ``calibration.folds`` groups. Each group's patches get their
own coreset; the union is the memory bank (a composable coreset: the same quality as one pass over
all patches, at the same cost). Every image is then scored against the bank of the *other* groups,
so each training normal yields an unseen score, and the conformal threshold rests on all of them.
The result is saved as ``enrollment.pt`` inside the bundle folder: the training-side state that
export turns into ONNX and that recalibration extends.

>>> result = enroll("data/elpv", Params(), Path("models/elpv/bundle"))  # doctest: +SKIP
>>> result.bank_size, result.thresholds.n_normals                        # doctest: +SKIP
(12544, 200)
"""

from __future__ import annotations

import getpass
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from flows.anomaly.calibrate import calibrate
from flows.anomaly.coreset import coreset_indices
from flows.anomaly.model import AnomalyScorer, build_model, embed_batches, fit_fingerprint, score_embeddings
from flows.data.dataset import dataset_hash, load_tensors, scan_dataset
from flows.params import Params
from serving.drift.baseline import Baseline, FigureStats
from serving.drift.figures import part_figures
from serving.engine.manifest import Thresholds
from serving.engine.preprocess import InputSpec, Roi, resize
from serving.errors import DatasetError

ENROLLMENT_FORMAT = 2  #: 2: k-fold unseen scores, fingerprints and the drift baseline

ENROLLMENT_FILE = "enrollment.pt"


@dataclass
class EnrollResult:
    """What enrollment produced, with the figures worth reporting."""

    path: Path
    thresholds: Thresholds
    bank_size: int
    n_enroll: int
    dataset_hash: str
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    unseen_scores: np.ndarray | None = None
    top_maps: np.ndarray | None = None
    top_crops: np.ndarray | None = None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """Seeded fold number (0..folds-1) of each of ``n`` images, as balanced as possible."""
    if n < 2 * folds:
        raise DatasetError(f"{n} good images cannot be split into {folds} calibration folds of at least 2; "
                           "add good images or lower calibration.folds")
    return np.random.default_rng(seed).permutation(np.arange(n) % folds)


def to_uint8_crops(x: np.ndarray, spec: InputSpec, size: int | None = None) -> np.ndarray:
    """Invert the normalisation: engine inputs back to uint8 RGB crops (optionally ``size`` on the long side)."""
    img = x.transpose(0, 2, 3, 1) * np.asarray(spec.std, np.float32) + np.asarray(spec.mean, np.float32)
    img = (img / spec.scale).round().clip(0, 255).astype(np.uint8)
    if size:
        k = size / max(spec.height, spec.width)
        img = np.stack([resize(i, max(1, round(spec.height * k)), max(1, round(spec.width * k))) for i in img])
    return img


def fold_banks(model, emb: torch.Tensor, folds: np.ndarray, ratio: float, chunk: int, seed: int,
               progress: bool) -> tuple[list, np.ndarray, float]:
    """Per fold, the model state of the *other* folds (PatchCore: bank; PaDiM: Gaussian); the final bank's
    source (image, row, col) for PatchCore; and the squared radius within which the bank covers its own
    normals' patches (recalibration covers new normals as tightly). The final model is left in ``model``."""
    n, dim, h, w = emb.shape
    k = int(folds.max()) + 1
    if isinstance(model, PatchcoreModel):
        flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
        patch_fold = np.repeat(folds, h * w)
        picks, radius = [], []
        for g in range(k):  # a coreset per fold: their union is the bank (composable k-center)
            members = torch.from_numpy(np.flatnonzero(patch_fold == g))
            picks.append(members[coreset_indices(flat[members], ratio, chunk_size=chunk, seed=seed + g,
                                                 progress=progress, radius=radius)])
        states = [flat[torch.cat([p for j, p in enumerate(picks) if j != g])] for g in range(k)]
        idx = torch.cat(picks).sort().values
        model.memory_bank = flat[idx]  # advanced indexing already copies
        img_i, rest = np.divmod(idx.numpy(), h * w)
        return states, np.stack([img_i, *np.divmod(rest, w)], axis=1).astype(np.int32), max(radius)
    states = []
    for g in range(k):
        model.memory_bank = [emb[torch.from_numpy(folds != g)]]
        model.fit()
        states.append({n_: t.clone() for n_, t in model.gaussian.state_dict().items()})
    model.memory_bank = [emb]
    model.fit()
    return states, np.zeros((0, 3), np.int32), 0.0


def unseen_scores(model, states: list, emb: torch.Tensor, folds: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Each image scored against the model of the other folds: (scores [N], maps [N, H, W])."""
    scores, maps = np.zeros(len(emb), np.float32), [None] * len(emb)
    final = {n: t.clone() for n, t in model.gaussian.state_dict().items()} if not isinstance(model, PatchcoreModel) else None
    for g, state in enumerate(states):
        members = np.flatnonzero(folds == g)
        if isinstance(model, PatchcoreModel):
            scorer = AnomalyScorer(model, bank=state)
        else:
            model.gaussian.load_state_dict(state)
            scorer = AnomalyScorer(model)
        s, m = score_embeddings(scorer, emb[torch.from_numpy(members)], size)
        scores[members] = s
        for i, j in enumerate(members):
            maps[j] = m[i]
    if final is not None:
        model.gaussian.load_state_dict(final)
    return scores, np.stack(maps)


def baseline_of(scores: np.ndarray, fingerprints: np.ndarray, crops: np.ndarray,
                thresholds: Thresholds) -> tuple[Baseline, dict]:
    """What normal looked like: the drift monitor's summary, and the per-part reference rows a drift report
    compares production against (score, lighting, focus and fingerprint of each normal)."""
    figs = [part_figures(c) for c in crops]
    centroid = fingerprints.mean(0) if fingerprints.size else np.zeros(0)
    spread = float(np.sqrt(((fingerprints - centroid) ** 2).sum(1).mean())) if fingerprints.size else 0.0
    reference = {"score": [float(v) for v in scores], "luminance": [f.luminance for f in figs],
                 "color_balance": [f.color_balance for f in figs], "sharpness": [f.sharpness for f in figs],
                 "embedding": np.round(np.asarray(fingerprints, np.float64), 5).tolist()}
    return Baseline(score=FigureStats.of(scores), embedding_dims=int(fingerprints.shape[1]) if fingerprints.ndim == 2 else 0,
                    embedding_centroid=[float(v) for v in centroid], embedding_spread=spread,
                    luminance=FigureStats.of([f.luminance for f in figs]),
                    color_balance=FigureStats.of([f.color_balance for f in figs]),
                    sharpness=FigureStats.of([f.sharpness for f in figs]),
                    frr_expected=thresholds.frr_expected, frr_interval=thresholds.frr_interval), reference


def enroll(data_dir: str | Path, params: Params, out_dir: str | Path, *, progress: bool = True,
           parent_version: str | None = None, extra_normals: list[Path] | None = None,
           extra_roi_applied: bool = False, recalibration: dict | None = None) -> EnrollResult:
    """Build the anomaly model from ``data_dir/train/good`` and calibrate it; save ``out_dir/enrollment.pt``.

    ``extra_normals`` (a recalibration's rebuild) are enrolled with them, already ROI-cropped when
    ``extra_roi_applied``; the drift baseline then describes the extra normals: current production.
    """
    t0 = time.perf_counter()
    mp = params.model
    spec = InputSpec(height=mp.input_hw[0], width=mp.input_hw[1])
    roi = Roi.parse(mp.roi)
    ds = scan_dataset(data_dir, min_train=params.enroll.min_good_images)
    x, paths, bad = load_tensors(ds.train, spec, roi, skip_corrupt=params.enroll.skip_corrupt, desc="load")
    if len(paths) < params.enroll.min_good_images:
        raise DatasetError(f"{data_dir}: only {len(paths)} readable images left to enroll after skipping corrupt files")
    current = None
    if extra_normals:
        xe, pe, be = load_tensors(extra_normals, spec, None if extra_roi_applied else roi,
                                  skip_corrupt=params.enroll.skip_corrupt, desc="load new")
        current = np.arange(len(paths), len(paths) + len(pe))
        x, paths, bad = np.concatenate([x, xe]), [*paths, *pe], [*bad, *be]
    return build(x, paths, params, out_dir, load_s=time.perf_counter() - t0, skipped=bad, progress=progress,
                 parent_version=parent_version, baseline_rows=current, recalibration=recalibration)


def build(x: np.ndarray, paths: list[Path], params: Params, out_dir: str | Path, *, load_s: float = 0.0,
          skipped: list | None = None, progress: bool = True, parent_version: str | None = None,
          baseline_rows: np.ndarray | None = None, recalibration: dict | None = None) -> EnrollResult:
    """Enroll preprocessed normals ``x`` [N,3,H,W]: bank, k-fold unseen scores, thresholds, fingerprint, baseline."""
    t_load = time.perf_counter()
    mp, cp = params.model, params.calibration
    spec = InputSpec(height=mp.input_hw[0], width=mp.input_hw[1])
    roi = Roi.parse(mp.roi)
    model = build_model(mp.algorithm, mp.backbone, mp.layers, weights=mp.weights,
                        padim_features=mp.padim_features, seed=mp.seed)
    folds = fold_of(len(paths), cp.folds, mp.seed)
    emb = embed_batches(model, torch.from_numpy(x), mp.batch_size, show_progress=progress)
    t_embed = time.perf_counter()
    states, bank_source, coverage_sq = fold_banks(model, emb, folds, mp.coreset_ratio, mp.coreset_chunk, mp.seed,
                                                  progress)
    bank_size = int(model.memory_bank.shape[0]) if isinstance(model, PatchcoreModel) else int(emb.shape[0])
    t_bank = time.perf_counter()

    scores, maps = unseen_scores(model, states, emb, folds, (spec.height, spec.width))
    thresholds = calibrate(scores, maps, target_frr=cp.target_frr, pixel_fpr=cp.pixel_fpr, folds=cp.folds)
    pooled = pooled_features(emb)
    embed_mean, embed_proj = fit_fingerprint(torch.from_numpy(pooled), mp.fingerprint_dims)
    fingerprints = project(pooled, embed_mean, embed_proj)
    crops = to_uint8_crops(x, spec)
    rows = np.arange(len(paths)) if baseline_rows is None else baseline_rows
    baseline, reference = baseline_of(scores[rows], fingerprints[rows], crops[rows], thresholds)
    del emb
    t_cal = time.perf_counter()

    timings = {"load_s": load_s, "embed_s": t_embed - t_load, "coreset_s": t_bank - t_embed,
               "calibrate_s": t_cal - t_bank, "enroll_s": t_cal - t_load, "total_s": t_cal - t_load + load_s}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dhash = dataset_hash(paths)
    save_enrollment(out, {
        "params": params.model_dump(mode="json"), "input": spec.model_dump(mode="json"),
        "roi": roi.model_dump() if roi else None, "state_dict": model.state_dict(), "bank_source": bank_source,
        "enroll_files": [p.name for p in paths], "folds": folds,
        "thumbnails": to_uint8_crops(x, spec, params.export.thumbnail_px),
        "parity_crops": crops[: params.export.parity_images], "thresholds": thresholds.model_dump(mode="json"),
        "unseen_scores": scores, "pooled": pooled, "embed_mean": embed_mean, "embed_proj": embed_proj,
        "fingerprints": fingerprints, "baseline": baseline.model_dump(mode="json"), "reference": reference, "dataset_hash": dhash,
        "timings": timings, "parent_version": parent_version, "recalibration": recalibration,
        "coverage_sq": coverage_sq,
    })
    top = np.argsort(-scores)[:8]
    return EnrollResult(path=out / ENROLLMENT_FILE, thresholds=thresholds, bank_size=bank_size,
                        n_enroll=len(paths), dataset_hash=dhash, skipped=[f"{p}: {why}" for p, why in skipped or []],
                        timings=timings, peak_rss_mb=peak_rss_mb(), unseen_scores=scores, top_maps=maps[top],
                        top_crops=crops[top])


def pooled_features(emb: torch.Tensor) -> np.ndarray:
    """[N, D, h, w] patch embeddings -> [N, D] mean patch feature per image (what the fingerprint projects)."""
    return emb.float().mean(dim=(2, 3)).numpy()


def project(pooled: np.ndarray, mean: torch.Tensor, proj: torch.Tensor) -> np.ndarray:
    """Fingerprints [N, E] of pooled features, as the graph's ``embedding`` output computes them."""
    return ((torch.from_numpy(pooled) - mean) @ proj).numpy()


def save_enrollment(out: Path, state: dict) -> Path:
    """Write ``enrollment.pt`` (format 2) with who made it; the training-side state export and recalibration read."""
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / ENROLLMENT_FILE
    torch.save({"format": ENROLLMENT_FORMAT, "mlflow_run_id": None, "created_by": f"{getpass.getuser()}@{platform.node()}",
                "created_at": time.time(), **state}, path)
    return path


def load_enrollment(path: str | Path, min_format: int = ENROLLMENT_FORMAT) -> dict:
    """Read ``enrollment.pt`` (a file, or the bundle folder holding it); one older than ``min_format`` is refused."""
    path = Path(path)
    if path.is_dir():
        path = path / ENROLLMENT_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: no enrollment found; run `lineguard enroll` first")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("format", 1) < min_format:
        # the export needs what later enrollments keep (unseen scores, fingerprints, the drift baseline)
        raise DatasetError(f"{path}: written by an earlier lineguard (enrollment format {ckpt.get('format', 1)}, "
                           f"this one needs {ENROLLMENT_FORMAT}); re-enroll: lineguard enroll --data DIR "
                           f"--out {path.parent}")
    return ckpt


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
