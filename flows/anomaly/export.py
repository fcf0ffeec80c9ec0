"""Export an enrollment to a verified engine bundle (ONNX, optional TensorRT).

The whole scoring path -- backbone, patch embedding, nearest-neighbour distance
to the memory bank (or PaDiM's Mahalanobis distance), anomaly map, image score --
becomes one ONNX graph with a dynamic batch. Thresholds stay in the manifest. For a CPU station, a
PatchCore bank also gets a search index (:mod:`serving.engine.search`) run after the backbone graph,
checked against the exact scores like the graph is.
Every export checks ONNX Runtime against torch on enrollment images and fails
loudly past ``parity_rtol``; a TensorRT engine, where TensorRT imports, gets the
same check.

>>> manifest = export_bundle("models/elpv/bundle", Params().export)  # doctest: +SKIP
>>> manifest.parity["onnx_max_rel_diff"] < 1e-3                      # doctest: +SKIP
True
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import subprocess
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

import serving
from flows.anomaly.enroll import load_enrollment, restore_model
from flows.anomaly.model import OUTPUT_NAMES, AnomalyScorer, PatchEmbedding
from flows.anomaly.onnx_graph import fold_pads_into_convs, static_same_padding
from flows.params import ExportParams
from flows.anomaly.tensorrt_build import build_engine, trtexec_command
from serving.drift.baseline import Baseline
from flows.fleet.keys import signer
from serving.engine.bundle import file_entries, write_manifest
from serving.engine.manifest import (BACKBONE_FILE, MODEL_FILE, SCHEMA_VERSION, Manifest, Provenance, SearchSpec,
                                     TensorRTInfo, Thresholds)
from serving.engine.search import FILES as SEARCH_FILES, IvfBackend, IvfIndex
from serving.engine.backends import OrtBackend, TensorRTBackend, tensorrt_available
from serving.errors import LineguardError
from serving.engine.preprocess import InputSpec, Roi, preprocess

INPUT_NAME = "image"
ENGINE_FILE = "model.plan"
SEARCH_DIR = "search"

log = logging.getLogger("lineguard.export")


class ParityError(LineguardError):
    """An exported engine disagrees with the torch model beyond tolerance."""


def git_commit() -> str | None:
    """The repository's HEAD commit, or None outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def export_onnx(scorer: torch.nn.Module, path: Path, spec: InputSpec, opset: int,
                outputs: tuple[str, ...] = OUTPUT_NAMES) -> None:
    """Write the scorer (or any image -> ``outputs`` module) as ONNX with a dynamic batch axis, its 'same' padding
    fixed for ``spec``'s size and folded into the convolutions (:mod:`flows.anomaly.onnx_graph`); ``scorer`` itself
    is left as it was, so the parity check compares the graph with the untouched model."""
    module = copy.deepcopy(scorer).eval()
    static_same_padding(module, spec.height, spec.width)
    dummy = torch.zeros(1, 3, spec.height, spec.width)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(path), input_names=[INPUT_NAME], output_names=list(outputs),
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in outputs}},
            opset_version=opset, dynamo=False,
        )
        out = module(dummy)
    _finish_graph(path, [tuple(t.shape) for t in (out if isinstance(out, (tuple, list)) else (out,))])


def _finish_graph(path: Path, shapes: list[tuple[int, ...]]) -> None:
    """Fold the constant Pads into their convolutions, and write each output's non-batch dimensions into the graph
    (the tracer leaves some symbolic), so a station can check a graph against the arrays beside it when it opens
    the bundle, not at its first part."""
    import onnx

    model = onnx.load(str(path))
    fold_pads_into_convs(model)
    for output, shape in zip(model.graph.output, shapes):
        for dim, size in zip(list(output.type.tensor_type.shape.dim)[1:], shape[1:]):
            dim.dim_value = size  # replaces the symbolic name (one of the two)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def parity(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Max relative difference of image scores and of anomaly maps (relative to the map's range)."""
    ref_s, ref_m = reference
    cand_s, cand_m = candidate
    score_rel = float(np.max(np.abs(cand_s - ref_s) / np.maximum(np.abs(ref_s), 1e-6)))
    map_rel = float(np.max(np.abs(cand_m - ref_m)) / max(float(np.ptp(ref_m)), 1e-6))
    return {"max_rel_diff": score_rel, "map_max_rel_diff": map_rel}


def check_parity(name: str, result: dict[str, float], rtol: float) -> None:
    """Raise :class:`ParityError` if the score difference exceeds ``rtol``."""
    if not result["max_rel_diff"] <= rtol:  # NaN is a failure too
        raise ParityError(
            f"{name} parity check failed: image scores differ from torch by up to "
            f"{result['max_rel_diff']:.2e} (relative), tolerance {rtol:.0e}; the export is not trustworthy, "
            "nothing was written to the manifest"
        )


def _write_explain(root: Path, ckpt: dict) -> list[str]:
    """Thumbnails of the enrolled normals and, per bank patch, the image and place it came from."""
    ex = root / "explain"
    (ex / "normals").mkdir(parents=True, exist_ok=True)
    names = []
    for i, thumb in enumerate(ckpt["thumbnails"]):
        name = f"explain/normals/{i:04d}.jpg"
        cv2.imwrite(str(root / name), thumb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        names.append(name)
    np.save(ex / "bank_source.npy", ckpt["bank_source"])
    np.save(ex / "fingerprints.npy", np.asarray(ckpt["fingerprints"], np.float32))
    (ex / "normals.json").write_text(json.dumps({"files": ckpt["enroll_files"],
                                                 "bank_source_columns": ["image_index", "row", "col"]}, indent=1))
    (ex / "reference.json").write_text(json.dumps(ckpt["reference"]))  # per-normal rows for drift reports
    return [*names, "explain/bank_source.npy", "explain/fingerprints.npy", "explain/normals.json",
            "explain/reference.json"]


def write_search(root: Path, model, ckpt: dict, ep: ExportParams, x: np.ndarray,
                 reference: tuple[np.ndarray, np.ndarray]) -> SearchSpec | None:
    """PatchCore with ``export.search: ivf`` and a bank of at least ``ivf_min_bank`` patches: index the memory
    bank under ``root/search/``, run the station's search path (backbone graph + index) on the parity images and
    compare it with the exact scores. Past ``ivf_rtol`` the index is removed and the bundle runs the exact graph
    (said in a warning)."""
    folder = root / SEARCH_DIR
    shutil.rmtree(folder, ignore_errors=True)
    if ep.search != "ivf" or not isinstance(model, PatchcoreModel) or len(model.memory_bank) < ep.ivf_min_bank:
        return None
    index = IvfIndex.build(model.memory_bank.float().numpy(), ep.ivf_cells, ep.ivf_probe)
    paths = index.save(folder)
    fp_mean, fp_proj = (np.asarray(torch.as_tensor(ckpt[k]).float().numpy()) for k in ("embed_mean", "embed_proj"))
    for role, value in (("fingerprint_mean", fp_mean), ("fingerprint_proj", fp_proj)):
        np.save(folder / SEARCH_FILES[role], value)
        paths.append(folder / SEARCH_FILES[role])
    backend = IvfBackend(OrtBackend(root / BACKBONE_FILE, providers=["CPUExecutionProvider"]), index, fp_mean, fp_proj,
                         reference[1].shape[1], reference[1].shape[2])
    s, m = backend.run(x)[:2]
    diff = parity(reference, (s, m[:, 0]))
    if not diff["max_rel_diff"] <= ep.ivf_rtol:  # NaN is a failure too
        log.warning("the IVF search (%d cells, %d probed) over-estimates a parity image's score by %.1e, past "
                    "export.ivf_rtol %.0e: the bundle runs the exact search; raise export.ivf_probe to keep the "
                    "index", index.cells, index.probe, diff["max_rel_diff"], ep.ivf_rtol)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return SearchSpec(graph=BACKBONE_FILE, files={role: f"{SEARCH_DIR}/{SEARCH_FILES[role]}" for role in SEARCH_FILES},
                      cells=index.cells, probe=index.probe, max_rel_diff=diff["max_rel_diff"],
                      map_max_rel_diff=diff["map_max_rel_diff"])


def export_bundle(bundle_dir: str | Path, ep: ExportParams, *, trt: bool | None = None) -> Manifest:
    """Turn ``bundle_dir/enrollment.pt`` into ``model.onnx`` + ``manifest.json`` (+ TensorRT engine)."""
    root = Path(bundle_dir)
    ckpt = load_enrollment(root)
    spec = InputSpec.model_validate(ckpt["input"])
    model = restore_model(ckpt)
    scorer = AnomalyScorer(model, ckpt["embed_mean"], ckpt["embed_proj"]).eval()
    for stale in ("manifest.json", ENGINE_FILE):
        (root / stale).unlink(missing_ok=True)

    onnx_path = root / MODEL_FILE
    t0 = time.perf_counter()
    export_onnx(scorer, onnx_path, spec, ep.opset)
    export_s = time.perf_counter() - t0

    x = np.stack([preprocess(c, spec) for c in ckpt["parity_crops"]])
    with torch.inference_mode():
        ref_s, ref_m, _, ref_e = scorer(torch.from_numpy(x))
    reference = (ref_s.numpy(), ref_m.numpy()[:, 0])
    ort_backend = OrtBackend(onnx_path, providers=["CPUExecutionProvider"])
    s, m, _, e = ort_backend.run(x)  # the whole batch at once: proves the batch axis is dynamic
    onnx_parity = parity(reference, (s, m[:, 0]))
    check_parity("ONNX Runtime", onnx_parity, ep.parity_rtol)
    fp_diff = float(np.max(np.abs(e - ref_e.numpy()))) if e.size else 0.0
    if fp_diff > 1e-2:
        raise ParityError(f"ONNX Runtime parity check failed: fingerprints differ from torch by {fp_diff:.2e}")
    s1, _, _, _ = ort_backend.run(x[:1])
    check_parity("ONNX Runtime (batch 1)", parity((reference[0][:1], reference[1][:1]), (s1, m[:1, 0])), ep.parity_rtol)

    export_onnx(PatchEmbedding(model), root / BACKBONE_FILE, spec, ep.opset, outputs=("patch_embedding",))
    search = write_search(root, model, ckpt, ep, x, reference)

    report = sorted(str(f.relative_to(root)) for f in (root / "report").rglob("*") if f.is_file())
    files = [MODEL_FILE, BACKBONE_FILE, *_write_explain(root, ckpt), *report]
    if search is not None:
        files += list(search.files.values())
    shape = (3, spec.height, spec.width)
    build_trt = tensorrt_available() if trt is None else trt
    if build_trt:
        info = build_engine(onnx_path, root / ENGINE_FILE, input_name=INPUT_NAME, shape=shape, precision=ep.tensorrt_precision)
        trt_s, trt_m = TensorRTBackend(root / ENGINE_FILE, list(OUTPUT_NAMES)).run(x)[:2]  # fingerprint: same graph
        trt_parity = parity(reference, (trt_s, trt_m[:, 0]))
        # FP16 cannot hold 1e-3 on every graph; the figure is recorded and checked at the same tolerance.
        check_parity(f"TensorRT {ep.tensorrt_precision}", trt_parity, ep.parity_rtol)
        tensorrt = TensorRTInfo(built=True, file=ENGINE_FILE, parity_max_rel_diff=trt_parity["max_rel_diff"], **info)
        files.append(ENGINE_FILE)
    else:
        cmd = " ".join(trtexec_command(MODEL_FILE, ENGINE_FILE, input_name=INPUT_NAME, shape=shape,
                                       precision=ep.tensorrt_precision))
        tensorrt = TensorRTInfo(built=False, precision=ep.tensorrt_precision,
                                reason=f"tensorrt does not import on this machine; on the target run: {cmd}")

    import anomalib  # noqa: PLC0415

    params = ckpt["params"]
    created = datetime.now(timezone.utc)
    entries = file_entries(root, files)
    version = f"{params['model']['algorithm']}-{created:%Y%m%dT%H%M%SZ}-{entries[MODEL_FILE].sha256[:8]}"
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        bundle_version=version,
        model_kind="anomaly",
        algorithm=params["model"]["algorithm"],
        backbone=params["model"]["backbone"],
        input=spec,
        outputs=list(OUTPUT_NAMES),
        thresholds=Thresholds.model_validate(ckpt["thresholds"]),
        roi=Roi.model_validate(ckpt["roi"]) if ckpt["roi"] else None,
        class_names=["anomaly"],
        files=entries,
        parity={"onnx_max_rel_diff": onnx_parity["max_rel_diff"], "onnx_map_max_rel_diff": onnx_parity["map_max_rel_diff"],
                "n_images": float(len(x)), "rtol": ep.parity_rtol, "export_s": export_s},
        tensorrt=tensorrt,
        model_file=MODEL_FILE,
        explain={"thumbnails": "explain/normals/", "bank_source": "explain/bank_source.npy",
                 "fingerprints": "explain/fingerprints.npy", "index": "explain/normals.json",
                 "reference": "explain/reference.json"},
        bench={"backbone": BACKBONE_FILE},
        provenance=Provenance(
            dataset_hash=ckpt["dataset_hash"],
            image_count=len(ckpt["enroll_files"]),
            holdout_count=len(ckpt["enroll_files"]),
            params=params,
            git_commit=git_commit(),
            mlflow_run_id=ckpt.get("mlflow_run_id"),
            onnx_opset=ep.opset,
            created_at=created.isoformat(),
            lineguard_version=getattr(serving, "__version__", "0.1.0"),
            torch_version=torch.__version__,
            anomalib_version=anomalib.__version__,
            parent_version=ckpt.get("parent_version"),
            created_by=ckpt.get("created_by"),
        ),
        baseline=Baseline.model_validate(ckpt["baseline"]),
        search=search,
    )
    write_manifest(root, manifest, sign=signer(ep.signing_key))
    return manifest
