"""Recalibration: a new bundle version from a running one and newly confirmed normals.

``incremental`` (the default) embeds only the new normals and merges them into the memory bank by
continuing the greedy k-center coreset from the existing bank (the old images are never re-embedded,
which anomalib cannot do: issues #1577, #2561). Thresholds are recalibrated over old *and* new
normals, both scored unseen: the new ones k-fold against old bank + the other folds' new patches; the
old ones keep their enrollment scores, which stay valid upper bounds because the bank only grew.
``rebuild`` re-enrolls old + new normals from scratch, for comparison.

New normals that stand out from the others and score above the old threshold are listed and left
out unless the engineer insists (``include_flagged``); new normals whose fingerprints lie far from the
old ones get a warning that suggests a rebuild (or a product of its own). The new bundle names its
parent, who made it, when and from how many images; before/after histograms go into it and MLflow.

>>> r = recalibrate("models/elpv/bundle", "capture-0412", "models/elpv/bundle-v2", params)   # doctest: +SKIP
>>> r.summary()["threshold_after"]                                                         # doctest: +SKIP
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from flows.anomaly.calibrate import calibrate, rate_above
from flows.anomaly.coreset import coreset_indices, nearest_sq_distance
from flows.anomaly.enroll import (baseline_of, enroll, fold_of, load_enrollment, pooled_features, project,
                                  restore_model, save_enrollment, to_uint8_crops)
from flows.anomaly.model import AnomalyScorer, embed_batches, fit_fingerprint, score_embeddings
from flows.data.dataset import dataset_hash, load_tensors
from flows.params import Params
from serving.drift.capture import flag_outliers
from serving.engine.bundle import load_bundle
from serving.engine.manifest import Manifest
from serving.engine.preprocess import InputSpec, Roi, resize
from serving.errors import ConfigError, DatasetError
from serving.evidence.export import CAPTURE_FILE
from serving.images import list_images

REPORT_DIR = "report"  #: inside the bundle: the recalibration's figures and record (hashed in the manifest)


@dataclass
class RecalResult:
    """What a recalibration did, with the before/after figures."""

    out: Path
    mode: str
    seconds: float
    n_new_normals: int
    flagged: list[str]
    bank_before: int
    bank_after: int
    threshold_before: float
    threshold_after: float
    frr_new_before: float
    frr_new_after: float
    frr_expected: float
    frr_interval: tuple[float, float]
    far_spreads: float
    bundle_version: str
    parent_version: str
    plots: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    model_version: str | None = None

    def summary(self) -> dict:
        """The JSON ``lineguard recalibrate --json`` prints."""
        d = asdict(self)
        d["out"] = str(self.out)
        return d

    def text(self) -> str:
        """A few lines for a terminal."""
        lo, hi = self.frr_interval
        return "\n".join([
            f"recalibrated ({self.mode}) in {self.seconds:.1f} s with {self.n_new_normals} new normals"
            + (f" ({len(self.flagged)} flagged and left out)" if self.flagged else ""),
            f"bank {self.bank_before} -> {self.bank_after} patches; threshold {self.threshold_before:.4g} -> "
            f"{self.threshold_after:.4g}",
            f"false rejects on the new normals: {self.frr_new_before:.1%} with the old model -> {self.frr_new_after:.1%} "
            f"(scored unseen); expected FRR {self.frr_expected:.2%} (95 % interval {lo:.2%}-{hi:.2%})",
            f"new bundle {self.bundle_version} (parent {self.parent_version}) in {self.out}",
            *(f"figure: {p}" for p in self.plots),
            *([f"MLflow run {self.mlflow_run_id}, model version {self.model_version}"] if self.mlflow_run_id else []),
        ])


def new_normal_paths(folder: Path) -> tuple[list[Path], bool, dict]:
    """(image paths, already ROI-cropped?, capture metadata) of a folder of new normals."""
    meta = json.loads((folder / CAPTURE_FILE).read_text()) if (folder / CAPTURE_FILE).is_file() else {}
    for sub in (folder / "good", folder / "train" / "good", folder):
        if sub.is_dir():
            paths = list_images(sub)
            if paths:
                return paths, bool(meta.get("roi_applied")), meta
    raise DatasetError(f"{folder}: no images of new normals (looked in good/, train/good/ and the folder itself)")


def recalibrate(bundle: str | Path, normals: str | Path, out: str | Path, params: Params, *,
                mode: str = "incremental", old_data: str | Path | None = None, include_flagged: bool = False,
                progress: bool = True) -> RecalResult:
    """Write a new bundle version at ``out`` from ``bundle`` and the new normals in ``normals``."""
    t0 = time.perf_counter()
    bundle, normals, out = Path(bundle), Path(normals), Path(out)
    if not (bundle / "enrollment.pt").is_file():
        raise ConfigError(f"{bundle}: no enrollment.pt beside the manifest; recalibrate from the engineer's bundle "
                          "folder written by `lineguard enroll` (or the MLflow run's artifacts), not a station copy")
    old_manifest, ckpt, p = _parent(bundle, params)
    paths, roi_applied, meta = new_normal_paths(normals)
    if len(paths) < p.recalibrate.min_new_normals:
        raise DatasetError(f"{normals}: {len(paths)} new normals; at least {p.recalibrate.min_new_normals} are needed "
                           "(capture about 10 minutes of production, or set recalibrate.min_new_normals)")
    spec = InputSpec.model_validate(ckpt["input"])
    roi = None if roi_applied else Roi.parse(p.model.roi)
    x, paths, bad = load_tensors(paths, spec, roi, skip_corrupt=True, desc="load new normals")
    model = restore_model(ckpt)
    emb = embed_batches(model, torch.from_numpy(x), p.model.batch_size, show_progress=progress)
    size = (spec.height, spec.width)
    old_thr = old_manifest.thresholds
    d_old = None
    if isinstance(model, PatchcoreModel):
        # each new patch's distance to the old bank: the old model's scores now, and the start of the merge later
        d_old = nearest_sq_distance(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]), model.memory_bank)
        before = _scores_from(AnomalyScorer(model), d_old, emb.shape, size)[0]
    else:
        before, _ = score_embeddings(AnomalyScorer(model), emb, size)

    warnings = [f"unreadable, left out: {why}" for _, why in bad]
    keep, flagged = _unflagged(before, old_thr.image, paths, include_flagged, warnings)
    x, emb, before = x[keep], emb[torch.from_numpy(keep)], before[keep]
    if d_old is not None:
        d_old = d_old.reshape(len(keep), -1)[torch.from_numpy(keep)].reshape(-1)
    paths = [q for q, k in zip(paths, keep) if k]
    if len(paths) < p.recalibrate.min_new_normals:
        raise DatasetError(f"{normals}: only {len(paths)} new normals left after leaving out {len(flagged)} flagged; "
                           f"at least {p.recalibrate.min_new_normals} are needed")

    pooled_new = pooled_features(emb)
    far = _spreads_away(pooled_new, ckpt, old_manifest.baseline, float(np.mean(before > old_thr.image)),
                        p.recalibrate.far_spreads, warnings)

    info = {"mode": mode, "parent_version": old_manifest.bundle_version, "user": f"{getpass.getuser()}@{platform.node()}",
            "time": time.time(), "n_new_normals": len(paths), "new_files": [q.name for q in paths],
            "flagged": flagged, "include_flagged": include_flagged, "capture": meta, "far_spreads": far}
    old_scores = np.asarray(ckpt["unseen_scores"], np.float64)
    bank_before = int(model.memory_bank.shape[0]) if isinstance(model, PatchcoreModel) else 0
    if mode == "incremental":
        new_unseen, bank_after, thr = _incremental(model, ckpt, emb, d_old, x, paths, pooled_new, p, out, info)
        old_after = old_scores  # the bank only grew: each old normal's unseen score can only fall
    elif mode == "rebuild":
        data = Path(old_data or p.data.dir)
        res = enroll(data, p, out, progress=progress, parent_version=old_manifest.bundle_version, extra_normals=paths,
                     extra_roi_applied=roi_applied, recalibration=info)
        n_old = res.n_enroll - len(paths)
        if n_old != len(ckpt["enroll_files"]):
            warnings.append(f"rebuild read {n_old} old normals from {data}, the bundle was enrolled from "
                            f"{len(ckpt['enroll_files'])}: is --old-data the original training folder?")
        new_unseen, old_after, bank_after = res.unseen_scores[n_old:], res.unseen_scores[:n_old], res.bank_size
        thr = res.thresholds.model_dump(mode="json")
    else:
        raise ConfigError(f"mode {mode!r}: choose incremental or rebuild")

    from flows.anomaly.export import export_bundle
    from flows.drift.plots import before_after

    (out / REPORT_DIR).mkdir(parents=True, exist_ok=True)
    plot = before_after({f"old model ({old_manifest.bundle_version[-8:]})": ({"old normals": old_scores, "new normals": before},
                                                                           old_thr.image),
                         f"new model ({mode})": ({"old normals" + (" (upper bound)" if mode == "incremental" else ""):
                                                  old_after, "new normals (unseen)": new_unseen}, thr["image"])},
                        out / REPORT_DIR / "scores_before_after.png",
                        f"Recalibration with {len(paths)} new normals: scores before and after")
    (out / REPORT_DIR / "recalibration.json").write_text(json.dumps(info, indent=1, default=str))
    manifest = export_bundle(out, p.export)
    result = RecalResult(
        out=out, mode=mode, seconds=time.perf_counter() - t0, n_new_normals=len(paths), flagged=flagged,
        bank_before=bank_before, bank_after=bank_after, threshold_before=old_thr.image, threshold_after=thr["image"],
        frr_new_before=rate_above(before, old_thr.image), frr_new_after=rate_above(new_unseen, thr["image"]),
        frr_expected=thr["frr_expected"], frr_interval=tuple(thr["frr_interval"]), far_spreads=far,
        bundle_version=manifest.bundle_version, parent_version=old_manifest.bundle_version,
        plots=[str(plot)], warnings=warnings)
    if p.tracking.enabled:
        from flows.tracking.mlflow_runs import log_recalibration

        result.mlflow_run_id, result.model_version = log_recalibration(result, p, old_manifest)
    return result


def _parent(bundle: Path, params: Params) -> tuple[Manifest, dict, Params]:
    """The bundle's manifest, its enrollment checkpoint, and the settings to recalibrate with: the model's are the
    bundle's; calibration, recalibration, export and tracking settings are today's."""
    old_manifest = load_bundle(bundle).manifest
    ckpt = load_enrollment(bundle, min_format=1)  # an old one gets the advice below
    if ckpt.get("format", 1) < 2 or "pooled" not in ckpt:
        raise ConfigError(f"{bundle}: enrolled by an earlier lineguard (bundle schema {old_manifest.schema_version}); "
                          "it has no unseen scores or fingerprints to build on: run with --mode rebuild, or re-enroll")
    p = Params.model_validate({**ckpt["params"], "calibration": params.calibration.model_dump(),
                               "recalibrate": params.recalibrate.model_dump(), "export": params.export.model_dump(),
                               "tracking": params.tracking.model_dump()})
    return old_manifest, ckpt, p


def _unflagged(before: np.ndarray, threshold: float, paths: list[Path], include_flagged: bool,
               warnings: list[str]) -> tuple[np.ndarray, list[str]]:
    """(which new normals to keep, the flagged ones): those that stand out and score above the old threshold are
    left out, with a warning, unless the engineer includes them."""
    flags = np.array(flag_outliers(list(before), threshold))
    flagged = [str(paths[i]) for i in np.flatnonzero(flags)]
    if flagged and not include_flagged:
        warnings.append(f"{len(flagged)} new normal(s) look like defects (they stand out and score above the old "
                        f"threshold) and were left out: {', '.join(Path(f).name for f in flagged[:10])}"
                        f"{' ...' if len(flagged) > 10 else ''}; pass --include-flagged if they are good")
        return ~flags, flagged
    return np.ones(len(paths), bool), flagged


def _spreads_away(pooled_new: np.ndarray, ckpt: dict, base, rejected: float, limit: float,
                  warnings: list[str]) -> float:
    """How many enrollment spreads the new normals' fingerprints lie from the old ones; a warning when far (or
    when the current model would reject most of them)."""
    fp_old_proj = project(pooled_new, ckpt["embed_mean"], ckpt["embed_proj"])
    far = float(np.linalg.norm(fp_old_proj.mean(0) - np.asarray(base.embedding_centroid)) / max(base.embedding_spread, 1e-9))
    if far > limit or rejected > 0.5:
        warnings.append(f"the new normals are far from the old ones: {rejected:.0%} of them would be rejected by the "
                        f"current model and their fingerprints lie {far:.1f} spreads from the old ones: a different "
                        "product or set-up? Consider --mode rebuild, or enrolling it as a product of its own")
    return far


def _scores_from(scorer: AnomalyScorer, patch_sq: torch.Tensor, shape, size) -> tuple[np.ndarray, np.ndarray]:
    """(image scores, maps) from each patch's squared distance to a bank, as the graph would compute them."""
    n, _, h, w = shape
    score, amap = scorer.patch_map(patch_sq.clamp_min(0).sqrt().reshape(n, 1, h, w), size)
    return score.numpy(), amap[:, 0].numpy()


def _incremental(model, ckpt: dict, emb: torch.Tensor, d_old: torch.Tensor, x: np.ndarray, paths: list[Path],
                 pooled_new: np.ndarray, p: Params, out: Path, info: dict) -> tuple[np.ndarray, int, dict]:
    """Merge the new normals into the bank (PatchCore) and save the new enrollment; the old images are not touched.
    Returns (the new normals' unseen scores, the bank size, the new thresholds).

    Per fold of the new normals, the greedy k-center continues from the old bank over that fold's patches and
    stops once they are covered as tightly as the old bank covers its own normals (``coverage_sq``): a steady
    line adds little, a real change adds what it needs. Unseen scores of fold g: distance to the old bank
    (known) or to the other folds' new picks, whichever is nearer.
    """
    if not isinstance(model, PatchcoreModel):
        raise ConfigError("incremental recalibration merges memory banks (PatchCore); for PaDiM use --mode rebuild")
    spec = InputSpec.model_validate(ckpt["input"])
    folds = fold_of(len(paths), p.calibration.folds, p.model.seed)
    n_old = len(ckpt["enroll_files"])
    old_bank = model.memory_bank.float()
    n, dim, h, w = emb.shape
    flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
    patch_fold = np.repeat(folds, h * w)
    picks = []
    for g in range(int(folds.max()) + 1):
        members = torch.from_numpy(np.flatnonzero(patch_fold == g))
        picks.append(members[coreset_indices(flat[members], p.model.coreset_ratio, chunk_size=p.model.coreset_chunk,
                                             seed=p.model.seed + g, existing_sq=d_old[members],
                                             stop_below=ckpt.get("coverage_sq"))])
    scorer = AnomalyScorer(model)
    scores, maps = np.zeros(n, np.float32), np.zeros((n, spec.height, spec.width), np.float32)
    for g in range(len(picks)):
        rows = np.flatnonzero(folds == g)
        members = torch.from_numpy(np.flatnonzero(patch_fold == g))
        others = torch.cat([q for j, q in enumerate(picks) if j != g])
        d = d_old[members]
        if len(others):
            d = torch.minimum(d, nearest_sq_distance(flat[members], flat[others]))
        scores[rows], maps[rows] = _scores_from(scorer, d, (len(rows), dim, h, w), (spec.height, spec.width))
    idx = torch.cat(picks).sort().values
    model.memory_bank = torch.cat([old_bank, flat[idx]])
    img_i, rest = np.divmod(idx.numpy(), h * w)
    new_source = np.stack([img_i + n_old, *np.divmod(rest, w)], axis=1).astype(np.int32)

    all_scores = np.concatenate([np.asarray(ckpt["unseen_scores"], np.float64), scores])
    t = calibrate(all_scores, maps, target_frr=p.calibration.target_frr, pixel_fpr=p.calibration.pixel_fpr,
                  folds=p.calibration.folds)
    # the old normals' pixel maps are not kept: the pixel threshold never falls below the one they set
    t = t.model_copy(update={"pixel": max(t.pixel, ckpt["thresholds"]["pixel"]),
                             "method": t.method + " (old normals: their enrollment scores; new normals: k-fold)"})
    pooled = np.concatenate([np.asarray(ckpt["pooled"], np.float32), pooled_new])
    mean, proj = fit_fingerprint(torch.from_numpy(pooled), p.model.fingerprint_dims)
    fingerprints = project(pooled, mean, proj)
    crops = to_uint8_crops(x, spec)
    baseline, reference = baseline_of(scores, fingerprints[n_old:], crops, t)
    save_enrollment(out, {
        **{k: ckpt[k] for k in ("params", "input", "roi")},
        "state_dict": model.state_dict(), "bank_source": np.concatenate([ckpt["bank_source"], new_source]),
        "enroll_files": [*ckpt["enroll_files"], *[q.name for q in paths]],
        "folds": np.concatenate([ckpt["folds"], folds]),
        "thumbnails": np.concatenate([ckpt["thumbnails"],  # the same shape as the enrolled ones (aspect kept)
                                      np.stack([resize(c, *ckpt["thumbnails"].shape[1:3]) for c in crops])]),
        "parity_crops": np.concatenate([ckpt["parity_crops"][: p.export.parity_images // 2],
                                        crops[: p.export.parity_images - p.export.parity_images // 2]]),
        "thresholds": t.model_dump(mode="json"), "unseen_scores": all_scores, "pooled": pooled, "embed_mean": mean,
        "embed_proj": proj, "fingerprints": fingerprints, "baseline": baseline.model_dump(mode="json"),
        "reference": reference, "dataset_hash": hashlib.sha256(f"{ckpt['dataset_hash']}+{dataset_hash(paths)}".encode()).hexdigest(),
        "timings": {}, "parent_version": info["parent_version"], "recalibration": info,
        "coverage_sq": ckpt.get("coverage_sq"),
    })
    return scores, int(model.memory_bank.shape[0]), t.model_dump(mode="json")
