"""Train, evaluate and export a YOLO defect detector into a detector bundle the station runs.

``lineguard detector train --data DIR --out BUNDLE``: DIR is a YOLO dataset (``data.yaml``) or an MVTec
AD-layout folder whose masks give the boxes. ultralytics trains offline (``flows.detector.yolo``); the
last weights are exported to ONNX (raw head, no NMS in the graph), checked against torch on the
validation images, and evaluated through the station's own :class:`~serving.engine.detector.DetectorEngine`
(numpy NMS): mAP50 and AP50 per class from ultralytics, precision and recall per class at the deployed
confidence from the engine, a confusion matrix plot. The bundle follows the same contract as anomaly
bundles (``model_kind: detector``), so the station verifies it the same way.

>>> r = train_detector("../shared/data/mvtec_ad/bottle", "models/bottle/detector", params)   # doctest: +SKIP
>>> r.summary()["map50"]                                                                     # doctest: +SKIP
0.81
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from flows.detector import dataset as ds
from flows.params import Params
from flows.fleet.keys import signer
from serving.engine.bundle import file_entries, write_manifest
from serving.engine.manifest import MODEL_FILE, SCHEMA_VERSION, DetectorSpec, Manifest, Provenance, TensorRTInfo
from serving.engine.preprocess import InputSpec
from serving.errors import ConfigError, DatasetError
from serving.images import list_images, read_image

PARITY_PX = 0.05  #: ONNX vs torch: boxes may differ by this many input pixels
PARITY_SCORE = 1e-4  #: ... and class scores by this much


class DetectorParityError(ConfigError):
    """The exported graph does not reproduce the trained model."""


@dataclass
class DetectorResult:
    """What training produced."""

    out: Path
    map50: float
    per_class: dict[str, float]
    precision: dict[str, float]
    recall: dict[str, float]
    seconds: float
    n_train: int
    n_val: int
    n_synthetic: int
    counts: dict
    bundle_version: str
    parity: dict
    dataset_sha256: str
    mlflow_run_id: str | None = None
    model_version: str | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The JSON ``lineguard detector train --json`` prints."""
        return {**asdict(self), "out": str(self.out)}


def prepare(data: str | Path, work: Path, p: Params) -> ds.DatasetInfo:
    """The dataset to train on: a YOLO dataset as it is, or one built from an MVTec AD-layout folder."""
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"{data}: no such folder; --data takes a YOLO dataset (data.yaml) or an MVTec AD-layout "
                           "folder with ground_truth/ masks")
    if (data / "data.yaml").is_file():
        return ds.load_yolo(data)
    d = p.detector
    items, goods = ds.from_mvtec(data, p.labels.classes or None)
    return ds.build(items, work / "dataset", classes=p.labels.classes or None, goods=goods[: d.max_goods],
                    val_fraction=p.labels.val_fraction, seed=d.seed, synthetic_per_good=d.synthetic_per_good,
                    real_repeat=d.real_repeat, rotate=d.rotate)


def _val_set(info: ds.DatasetInfo) -> list[tuple[Path, list[tuple[int, float, float, float, float]]]]:
    """(image, [(class index, x0, y0, x1, y1) in pixels]) of every validation image."""
    out = []
    for img in list_images(info.root / "val" / "images"):
        h, w = read_image(img).shape[:2]
        boxes = []
        lab = info.root / "val" / "labels" / f"{img.stem}.txt"
        for line in lab.read_text().splitlines() if lab.exists() else []:
            c, cx, cy, bw, bh = (float(v) for v in line.split())
            boxes.append((int(c), (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
        out.append((img, boxes))
    return out


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-9)


def engine_metrics(engine, val, classes: list[str]) -> tuple[dict, dict, np.ndarray]:
    """Per-class precision and recall at the deployed confidence (IoU >= 0.5), and the confusion matrix
    (rows: truth, columns: prediction; the last row/column is background), through the station's engine."""
    n = len(classes)
    cm = np.zeros((n + 1, n + 1), int)
    tp, fp, fn = np.zeros(n), np.zeros(n), np.zeros(n)
    for img, truth in val:
        dets = engine.infer(read_image(img))
        pred = [(classes.index(d.class_name), d.box[0], d.box[1], d.box[0] + d.box[2], d.box[1] + d.box[3]) for d in dets]
        used = set()
        for c, *tb in truth:
            best, bj = 0.0, None
            for j, (pc, *pb) in enumerate(pred):
                if j not in used and _iou(tb, pb) > best:
                    best, bj = _iou(tb, pb), j
            if bj is not None and best >= 0.5:
                used.add(bj)
                cm[c, pred[bj][0]] += 1
                if pred[bj][0] == c:
                    tp[c] += 1
                else:
                    fn[c] += 1
                    fp[pred[bj][0]] += 1
            else:
                cm[c, n] += 1
                fn[c] += 1
        for j, (pc, *_) in enumerate(pred):
            if j not in used:
                cm[n, pc] += 1
                fp[pc] += 1
    precision = {classes[i]: float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] else 0.0 for i in range(n)}
    recall = {classes[i]: float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] else 0.0 for i in range(n)}
    return precision, recall, cm


def confusion_plot(cm: np.ndarray, classes: list[str], path: Path) -> Path:
    """The confusion matrix as a picture."""
    from flows.evaluation.plots import _plt

    plt = _plt()
    labels = [*classes, "background"]
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5), dpi=110)
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("detected")
    ax.set_ylabel("true")
    ax.set_title("Held-out parts at the deployed confidence")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _parity(weights: Path, onnx_path: Path, val, imgsz: int) -> dict:
    """Raw head outputs of torch and ONNX Runtime on up to 8 validation images."""
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO

    from serving.engine.detector import letterbox
    from serving.engine.preprocess import normalize

    net = YOLO(str(weights)).model.float().eval().fuse()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    spec = InputSpec(height=imgsz, width=imgsz, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    box_diff = score_diff = 0.0
    for img, _ in val[:8]:
        x = normalize(letterbox(read_image(img), imgsz, imgsz)[0], spec)[None]
        with torch.no_grad():
            y = net(torch.from_numpy(x))
        y = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
        o = sess.run(None, {name: x})[0]
        box_diff = max(box_diff, float(np.abs(y[:, :4] - o[:, :4]).max()))
        score_diff = max(score_diff, float(np.abs(y[:, 4:] - o[:, 4:]).max()))
    if box_diff > PARITY_PX or score_diff > PARITY_SCORE:
        raise DetectorParityError(f"detector ONNX parity check failed: boxes differ from torch by {box_diff:.3g} px "
                                  f"(limit {PARITY_PX}), scores by {score_diff:.3g} (limit {PARITY_SCORE})")
    return {"onnx_box_max_abs_px": box_diff, "onnx_score_max_abs": score_diff, "n_images": float(min(8, len(val)))}


def train_detector(data: str | Path, out: str | Path, params: Params, *, trained_on: dict | None = None) -> DetectorResult:
    """Train on ``data``, export and evaluate; write the detector bundle at ``out``."""
    from flows.detector.yolo import new_model, offline

    t0 = time.perf_counter()
    out = Path(out)
    work = out.parent / f".{out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    info = prepare(data, work, params)
    classes, d = info.classes, params.detector
    if not info.n_val:
        raise DatasetError(f"{data}: no validation parts; label more parts or lower labels.val_fraction")
    offline()
    model = new_model(classes, work, d.model)
    frozen = {"freeze": 1} if d.model == "lite0-yolo11n" else {}  # the pretrained trunk keeps its ImageNet features
    model.train(data=str(info.data_yaml), epochs=d.epochs, imgsz=d.imgsz, batch=d.batch, workers=1, device="cpu",
                amp=False, pretrained=d.model.endswith(".pt"), close_mosaic=d.close_mosaic, flipud=0.5, fliplr=0.5,
                cache="ram", plots=False, seed=d.seed, deterministic=False, project=str(work / "runs"), name="train",
                exist_ok=True, verbose=False, **frozen)
    weights = work / "runs" / "train" / "weights" / "last.pt"
    from ultralytics import YOLO

    val = YOLO(str(weights)).val(data=str(info.data_yaml), imgsz=d.imgsz, batch=d.batch, split="val", plots=False,
                                 verbose=False, workers=0)
    per_class = {classes[int(c)]: round(float(a), 4) for c, a in zip(val.box.ap_class_index, val.box.ap50)}
    exported = Path(YOLO(str(weights)).export(format="onnx", imgsz=d.imgsz, simplify=False, dynamic=False, batch=1,
                                              opset=params.export.opset))
    if out.exists():
        shutil.rmtree(out)
    (out / "report").mkdir(parents=True)
    shutil.copyfile(exported, out / MODEL_FILE)
    val_set = _val_set(info)
    parity = _parity(weights, out / MODEL_FILE, val_set, d.imgsz)

    import onnxruntime as ort

    output = ort.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"]).get_outputs()[0].name
    spec = InputSpec(height=d.imgsz, width=d.imgsz, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    det = DetectorSpec(confidence={c: d.confidence for c in classes}, iou=d.iou)
    trained = trained_on or {"counts": {c: v["train"] + v["val"] for c, v in info.counts.items()}}
    (out / "report" / "trained_on.json").write_text(json.dumps(trained, indent=1))

    def manifest(files: list[str], metrics: dict) -> Manifest:
        from flows.anomaly.export import git_commit
        import serving

        created = datetime.now(timezone.utc)
        entries = file_entries(out, files)
        return Manifest(
            schema_version=SCHEMA_VERSION,
            bundle_version=f"detector-{created:%Y%m%dT%H%M%SZ}-{entries[MODEL_FILE].sha256[:8]}",
            model_kind="detector", algorithm="yolo", backbone=d.model, input=spec, outputs=[output],
            detector=det.model_copy(update={"metrics": metrics}), roi=None, class_names=classes, files=entries,
            parity={**parity, "rtol": PARITY_SCORE}, tensorrt=TensorRTInfo(
                built=False, precision="fp16", reason="tensorrt does not import on this machine; on the target run: "
                f"trtexec --onnx={MODEL_FILE} --saveEngine=model.plan --fp16"),
            provenance=Provenance(dataset_hash=info.sha256, image_count=info.n_train, holdout_count=info.n_val,
                                  params=params.model_dump(mode="json"), git_commit=git_commit(),
                                  onnx_opset=params.export.opset, created_at=created.isoformat(),
                                  lineguard_version=getattr(serving, "__version__", "0.1.0")))

    # evaluate through the station's engine: write a provisional manifest so the engine can verify and load it
    write_manifest(out, manifest([MODEL_FILE, "report/trained_on.json"], {}))
    from serving.engine.detector import DetectorEngine

    precision, recall, cm = engine_metrics(DetectorEngine.load(out), val_set, classes)
    confusion_plot(cm, classes, out / "report" / "confusion_matrix.png")
    metrics = {"map50": round(float(val.box.map50), 4), "ap50": per_class, "precision": precision, "recall": recall,
               "confidence": d.confidence, "n_val": info.n_val, "confusion_matrix": cm.tolist()}
    (out / "report" / "metrics.json").write_text(json.dumps(metrics, indent=1))
    m = manifest([MODEL_FILE, "report/trained_on.json", "report/metrics.json", "report/confusion_matrix.png"], metrics)
    write_manifest(out, m, sign=signer(params.export.signing_key))
    result = DetectorResult(out=out, map50=metrics["map50"], per_class=per_class, precision=precision, recall=recall,
                            seconds=time.perf_counter() - t0, n_train=info.n_train, n_val=info.n_val,
                            n_synthetic=info.n_synthetic, counts=info.counts, bundle_version=m.bundle_version,
                            parity=parity, dataset_sha256=info.sha256, warnings=list(info.unreadable))
    if params.tracking.enabled:
        from flows.tracking.mlflow_runs import log_detector

        result.mlflow_run_id, result.model_version = log_detector(result, params, Path(data))
    return result
