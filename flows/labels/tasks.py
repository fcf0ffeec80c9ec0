"""Label Studio tasks from the confirmed defects in synced evidence (what :mod:`flows.labels.studio` pushes).

Each task is *pre-annotated*: a prediction with one box per connected component of the anomaly map above the
bundle's pixel threshold, labelled with the operator's class, scored with the anomaly score. Beside the part, the
labeler sees why the station rejected it: the station's side-by-side picture, or one made now from the bundle for a
part the station did not explain. Images are decrypted with the evidence key into the label store, under Label
Studio's Local Files root. Tasks carry the part's identity (``ext_id`` = station/boot/seq) so a re-push finds them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from flows.labels.store import LabelStore, is_part_id
from serving.errors import ConfigError

FROM_NAME, TO_NAME = "label", "image"
EXPLAIN_NAME = "explain"  #: the task's second picture: why the station rejected the part (not labelled)


def anomaly_boxes(amap: np.ndarray, pixel_threshold: float, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Boxes (x, y, w, h in image pixels) of the connected regions of an anomaly map above the pixel threshold."""
    mask = cv2.resize((amap > pixel_threshold).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return [(float(x), float(y), float(w), float(h)) for x, y, w, h, area in stats[1:] if area >= 16]


def _task(ext_id: str, image_rel: str, width: int, height: int, boxes, cls: str, score: float, version: str,
          explain_rel: str = "", explain_from: str = "") -> dict:
    result = [{"id": hashlib.sha1(f"{ext_id}/{i}".encode()).hexdigest()[:10], "from_name": FROM_NAME, "to_name": TO_NAME,
               "type": "rectanglelabels", "original_width": width, "original_height": height, "image_rotation": 0,
               "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                         "height": 100 * h / height, "rotation": 0, "rectanglelabels": [cls]}, "score": score}
              for i, (x, y, w, h) in enumerate(boxes)]
    explain = f"/data/local-files/?d={explain_rel}" if explain_rel else ""  # "": no picture (the key must be there)
    return {"data": {"image": f"/data/local-files/?d={image_rel}", EXPLAIN_NAME: explain, "ext_id": ext_id},
            "meta": {"source": "lineguard", "explain": explain_from},
            "predictions": [{"model_version": version, "score": score, "result": result}]}


def defect_tasks(evidence: str, key_file: str | Path, bundle: str | Path, store: LabelStore, classes: list[str],
                 files_root: str | Path, default_class: str | None = None) -> tuple[list[dict], list[str]]:
    """Tasks for every confirmed defect in the synced evidence not yet in Label Studio (or deleted there);
    their images decrypted into the store. Returns (tasks, problems)."""
    import fsspec

    from flows.data.evidence import load_records, storage_options
    from serving.engine.anomaly import AnomalyEngine
    from serving.evidence.crypto import ImageVault, load_key

    records = load_records(evidence)
    if records.empty or "disposition" not in records:
        return [], []
    confirmed = records[records["disposition"] == "defect"]
    engine = AnomalyEngine.load(bundle)
    engine.roi = None  # evidence crops are already the ROI
    pix = engine.thresholds.pixel
    key = load_key(key_file)
    known = set(store.state["tasks"]) | set(store.state["tombstones"]) | {t["data"]["ext_id"] for t in store.state["queue"]}
    root = evidence[len("file://"):] if evidence.startswith("file://") else evidence
    tasks, problems = [], []
    for r in confirmed.itertuples():
        ext_id = f"{r.station_id}/{r.boot_id}/{r.seq}"
        if ext_id in known:
            continue
        if not is_part_id(ext_id):
            problems.append(f"{ext_id!r}: not a part id (station/boot/seq) as stations write them: left out")
            continue
        cls = r.disposition_class if isinstance(r.disposition_class, str) and r.disposition_class else default_class
        if cls not in classes:
            problems.append(f"{ext_id}: operator's class {cls!r} is not one of {classes}; add it to labels.classes "
                            "or re-review the part")
            continue
        if not isinstance(r.crop_file, str):
            problems.append(f"{ext_id}: no picture was kept for this part")
            continue
        try:
            with fsspec.open(f"{root}/{r.station_id}/images/{r.crop_file}", "rb", **storage_options(root)) as fh:
                png = ImageVault(key, r.station_id, Path(".")).decrypt(r.crop_file, fh.read())
        except Exception as exc:  # noqa: BLE001 - one unreadable picture does not stop the push
            problems.append(f"{ext_id}: picture {r.crop_file} could not be read or decrypted ({type(exc).__name__})")
            continue
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            problems.append(f"{ext_id}: picture {r.crop_file} decrypts but is not an image: left out")
            continue
        img = img[:, :, ::-1]
        try:
            res = engine.infer(img)
        except Exception as exc:  # noqa: BLE001 - no pre-drawn box for this one part, the others go on
            problems.append(f"{ext_id}: the anomaly map could not be computed ({type(exc).__name__}: {exc}): left out")
            continue
        path = store.root / "images" / f"{LabelStore.key(ext_id)}.png"
        path.write_bytes(png)
        try:
            rel = path.resolve().relative_to(Path(files_root).resolve())
        except ValueError:
            raise ConfigError(f"label store {store.root} is outside Label Studio's Local Files root {files_root}; "
                              "keep the store under it (the project's server serves data/)") from None
        explain_jpg, explain_from = _explain_picture(r, root, key, engine, img, res, ext_id, problems)
        explain_rel = ""
        if explain_jpg:  # beside the part's picture: served by the same Local Files storage, never made a task
            explain_path = path.with_name(f"{LabelStore.key(ext_id)}.explain.jpg")
            explain_path.write_bytes(explain_jpg)
            explain_rel = str(explain_path.resolve().relative_to(Path(files_root).resolve()))
        boxes = anomaly_boxes(res.anomaly_map, pix, img.shape[1], img.shape[0]) or [(0.0, 0.0, img.shape[1], img.shape[0])]
        tasks.append(_task(ext_id, rel, img.shape[1], img.shape[0], boxes, cls, round(float(r.score), 4),
                           engine.bundle.manifest.bundle_version, explain_rel, explain_from))
    return tasks, problems


def _explain_picture(r, root: str, key: bytes, engine, img: np.ndarray, res, ext_id: str,
                     problems: list[str]) -> tuple[bytes | None, str]:
    """(JPEG, where it came from) of why the station rejected the part: the station's own picture when it synced
    one, else made now from ``engine``'s bundle; (None, "") when neither can be had (the problem is listed)."""
    import fsspec

    from flows.data.evidence import storage_options
    from serving.engine.explain_picture import encode_jpeg
    from serving.engine.preprocess import heatmap_overlay
    from serving.evidence.crypto import ImageVault

    name = getattr(r, "explain_file", None)
    if isinstance(name, str) and name:
        try:
            with fsspec.open(f"{root}/{r.station_id}/images/{name}", "rb", **storage_options(root)) as fh:
                return ImageVault(key, r.station_id, Path(".")).decrypt(name, fh.read()), "station"
        except Exception as exc:  # noqa: BLE001 - made again below; the part is not left out for it
            problems.append(f"{ext_id}: the station's explanation picture {name} could not be read or decrypted "
                            f"({type(exc).__name__}); made again from the bundle")
    pix = engine.thresholds.pixel
    try:
        ex = engine.explainer
        picture, _ = ex.render(heatmap_overlay(img, res.anomaly_map, pix), ex.explain(res, pix))
        return encode_jpeg(picture), f"push: {engine.bundle.manifest.bundle_version}"
    except Exception as exc:  # noqa: BLE001 - the task goes without it rather than not at all
        problems.append(f"{ext_id}: no explanation picture ({type(exc).__name__}: {exc}); the task goes without it")
        return None, ""
