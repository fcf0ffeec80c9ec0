"""Detector datasets in YOLO format (images, labels, ``data.yaml``), split by part, with copy-paste synthesis.

Sources: an MVTec AD-layout folder (defect types with masks: boxes are the masks' connected components),
the label store that Label Studio annotations are pulled into, or a YOLO dataset already made. About 20
real examples per class are too few for a detector, so training images are multiplied: each good image
gets one or two training defects pasted in (their mask, or their box, with a feathered edge), rotated
about the image centre when the part is round and centred (``rotate``), else at their own place.
Validation images are real, never pasted from, and never share a part with training.

>>> info = build([LabeledImage(...)], "data/labels/yolo", classes=["crack"], goods=[...])   # doctest: +SKIP
>>> info.counts
{'crack': {'train': 14, 'val': 6}}
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from serving.errors import DatasetError
from serving.images import list_images, read_image, read_mask


@dataclass
class LabeledImage:
    """One real defective part: its image, boxes (class, x0, y0, x1, y1 in pixels) and, where known, a mask."""

    path: Path
    boxes: list[tuple[str, float, float, float, float]]
    part_id: str
    mask: np.ndarray | None = None


@dataclass
class DatasetInfo:
    """What a dataset holds: per-class box counts per split, sizes, and a content hash."""

    root: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]
    n_train: int
    n_val: int
    n_synthetic: int
    sha256: str
    unreadable: list[str] = field(default_factory=list)

    @property
    def data_yaml(self) -> Path:
        """The ``data.yaml`` ultralytics trains from."""
        return self.root / "data.yaml"


def mask_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The 8-connected components of a mask as (x0, y0, x1, y1)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in stats[1:]]


def from_mvtec(root: str | Path, classes: list[str] | None = None) -> tuple[list[LabeledImage], list[Path]]:
    """(defective parts with mask boxes, good training images) of an MVTec AD-layout folder."""
    root = Path(root)
    gt = root / "ground_truth"
    if not gt.is_dir():
        raise DatasetError(f"{root}: no ground_truth/ masks; an MVTec AD-layout folder needs test/<type>/*.png and "
                           "ground_truth/<type>/<stem>_mask.png to give boxes")
    types = classes or sorted(p.name for p in gt.iterdir() if p.is_dir())
    items = []
    for t in types:
        for img in list_images(root / "test" / t):
            mask = read_mask(gt / t / f"{img.stem}_mask.png").astype(np.uint8)
            items.append(LabeledImage(img, [(t, *b) for b in mask_boxes(mask)], f"{t}/{img.stem}", mask))
    goods = list_images(root / "train" / "good") if (root / "train" / "good").is_dir() else []
    return items, goods


def split_by_part(items: list[LabeledImage], val_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded split per first class, by part: a part's images are all in train or all in val."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    for it in items:
        by_class.setdefault(it.boxes[0][0] if it.boxes else "", []).append(it.part_id)
    val_parts: set[str] = set()
    for parts in by_class.values():
        parts = sorted(set(parts))
        n_val = int(len(parts) * val_fraction)
        val_parts |= {parts[i] for i in rng.permutation(len(parts))[:n_val]}
    return [i for i in items if i.part_id not in val_parts], [i for i in items if i.part_id in val_parts]


def _yolo_lines(boxes, classes: list[str], w: int, h: int) -> str:
    return "".join(f"{classes.index(c)} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} "
                   f"{(y1 - y0) / h:.6f}\n" for c, x0, y0, x1, y1 in boxes)


def _feather(dst: np.ndarray, src: np.ndarray, mask: np.ndarray, feather: int = 6) -> np.ndarray:
    """``src`` opaque inside ``mask`` and fading out over ``feather`` px around it."""
    m = (mask > 0).astype(np.uint8)
    k = 2 * feather + 1
    a = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
    a = np.maximum(cv2.GaussianBlur(a, (0, 0), feather / 2), m.astype(np.float32))[..., None]
    return (a * src.astype(np.float32) + (1 - a) * dst.astype(np.float32)).round().clip(0, 255).astype(np.uint8)


def _region(it: LabeledImage, shape, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """What to paste of a defect, and its class: the whole defect (mask, or boxes filled) when it has one class;
    one box of it (within the mask) when a labeler gave its boxes different classes."""
    boxes = it.boxes
    if len({b[0] for b in boxes}) > 1:
        boxes = [boxes[int(rng.integers(len(boxes)))]]
    m = np.zeros(shape[:2], np.uint8)
    for _, x0, y0, x1, y1 in boxes:
        m[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = 1
    if it.mask is not None:
        mask = (it.mask > 0).astype(np.uint8)
        m = mask if len(boxes) == len(it.boxes) else m & mask
    return m, boxes[0][0]


def synthesize(train: list[LabeledImage], goods: list[Path], per_good: int, out: Path, classes: list[str],
               seed: int, rotate: bool) -> int:
    """Paste 1-2 training defects into each good image ``per_good`` times; return how many images were written."""
    rng = np.random.default_rng(seed + 1000)
    pool = [(it, read_image(it.path)) for it in train if it.boxes]
    written = 0
    for gp in goods:
        try:
            good = read_image(gp)
        except Exception as exc:  # noqa: BLE001 - one unreadable good image: the others still take pastes
            print(f"synthesis: skipped {exc}", flush=True)
            continue
        for k in range(per_good):
            img, occupied, boxes = good.copy(), np.zeros(good.shape[:2], np.uint8), []
            for _ in range(int(rng.integers(1, 3))):
                for _attempt in range(10):
                    it, src = pool[int(rng.integers(len(pool)))]
                    region, cls = _region(it, src.shape, rng)
                    h, w = good.shape[:2]
                    if src.shape[:2] != (h, w):  # a labeled picture kept at another size than the good images
                        src = cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)
                        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_NEAREST)
                    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)) if rotate else 0.0, 1.0)
                    if rotate and rng.integers(2):
                        src, region = src[:, ::-1].copy(), region[:, ::-1].copy()
                    ws = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                    wm = cv2.warpAffine(region, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
                    if wm.sum() >= 50 and not (cv2.dilate(wm, np.ones((31, 31), np.uint8)) & occupied).any():
                        break
                else:
                    continue
                img = _feather(img, ws, wm)
                occupied |= wm
                boxes += [(cls, *b) for b in mask_boxes(wm)]
            if boxes:
                name = f"syn_{gp.stem}_{k}"
                cv2.imwrite(str(out / "train" / "images" / f"{name}.png"), img[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
                (out / "train" / "labels" / f"{name}.txt").write_text(_yolo_lines(boxes, classes, img.shape[1], img.shape[0]))
                written += 1
    return written


def build(items: list[LabeledImage], out: str | Path, *, classes: list[str] | None = None, goods: list[Path] = (),
          val_fraction: float = 1 / 3, seed: int = 0, synthetic_per_good: int = 3, real_repeat: int = 2,
          rotate: bool = True) -> DatasetInfo:
    """Write a YOLO dataset to ``out`` (replaced) and return what it holds."""
    out = Path(out)
    items = [it for it in items if it.boxes]
    if not items:
        raise DatasetError(f"{out}: no labeled defects with boxes to build a detector dataset from")
    classes = classes or sorted({b[0] for it in items for b in it.boxes})
    unknown = sorted({b[0] for it in items for b in it.boxes} - set(classes))
    if unknown:
        raise DatasetError(f"labels use classes {unknown} that are not in the class list {classes}; add them to "
                           "labels.classes or fix the annotations")
    if out.exists():
        shutil.rmtree(out)
    for s in ("train", "val"):
        (out / s / "images").mkdir(parents=True)
        (out / s / "labels").mkdir(parents=True)
    train, val = split_by_part(items, val_fraction, seed)
    unreadable, counts, readable = [], {c: {"train": 0, "val": 0} for c in classes}, []
    for split, chosen, repeat in (("train", train, real_repeat), ("val", val, 1)):
        for it in chosen:
            try:
                img = read_image(it.path)
            except Exception as exc:  # noqa: BLE001 - listed and left out; the rest of the dataset is built
                unreadable.append(str(exc))
                continue
            if split == "train":
                readable.append(it)
            lines = _yolo_lines(it.boxes, classes, img.shape[1], img.shape[0])
            for r in range(max(1, repeat)):
                name = it.part_id.replace("/", "_") + (f"_r{r}" if r else "")
                cv2.imwrite(str(out / split / "images" / f"{name}.png"), img[:, :, ::-1])
                (out / split / "labels" / f"{name}.txt").write_text(lines)
            for c, *_ in it.boxes:
                counts[c][split] += 1
    n_syn = synthesize(readable, list(goods), synthetic_per_good, out, classes, seed, rotate) \
        if goods and readable and synthetic_per_good else 0
    (out / "data.yaml").write_text(yaml.safe_dump({"path": str(out.resolve()), "train": "train/images",
                                                   "val": "val/images", "names": dict(enumerate(classes))}))
    digest = hashlib.sha256()
    for f in sorted(out.rglob("*.txt")):
        digest.update(f.read_bytes())
    info = DatasetInfo(out, classes, counts, len(list((out / "train" / "images").glob("*.png"))),
                       len(list((out / "val" / "images").glob("*.png"))), n_syn, digest.hexdigest(), unreadable)
    (out / "split.json").write_text(json.dumps({"train": sorted({t.part_id for t in train}),
                                                "val": sorted({v.part_id for v in val})}, indent=1))
    (out / "dataset.json").write_text(json.dumps({**asdict(info), "root": str(out)}, indent=1))
    return info


def load_yolo(root: str | Path) -> DatasetInfo:
    """Check a YOLO dataset folder and count what it holds (a corrupt image is named, not trained on)."""
    root = Path(root)
    if not (root / "data.yaml").is_file():
        raise DatasetError(f"{root}: no data.yaml; expected a YOLO dataset (train/, val/, data.yaml) or an MVTec "
                           "AD-layout folder with ground_truth/ masks")
    spec = yaml.safe_load((root / "data.yaml").read_text())
    names = spec.get("names")
    classes = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
    counts = {c: {"train": 0, "val": 0} for c in classes}
    unreadable, sizes = [], {}
    for split in ("train", "val"):
        imgs = list_images(root / split / "images") if (root / split / "images").is_dir() else []
        sizes[split] = len(imgs)
        for img in imgs:
            try:
                read_image(img)
            except Exception as exc:  # noqa: BLE001
                unreadable.append(str(exc))
            lab = root / split / "labels" / f"{img.stem}.txt"
            for line in lab.read_text().splitlines() if lab.exists() else []:
                if line.strip():
                    counts[classes[int(line.split()[0])]][split] += 1
    if unreadable:
        raise DatasetError(f"{root}: {len(unreadable)} unreadable image(s):\n" + "\n".join(f"  {u}" for u in unreadable[:20])
                           + "\nfix or remove them; nothing was trained")
    if not sizes.get("val"):
        raise DatasetError(f"{root}: no validation images (val/images); a detector must be evaluated on held-out parts")
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.txt")):
        digest.update(f.read_bytes())
    return DatasetInfo(root, classes, counts, sizes["train"], sizes["val"], 0, digest.hexdigest())
