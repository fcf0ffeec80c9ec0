"""Reading an MVTec-AD-layout data set, with errors that say what to fix.

Layout: ``train/good/*`` (required), ``test/<type>/*`` (optional; ``good`` is
normal, anything else a defect type), ``ground_truth/<type>/<stem>_mask.png``
(optional; when present every defect image needs its mask and vice versa).
Images may be PNG, JPEG, BMP or TIFF, grayscale or colour, of any size.

>>> scan_dataset("/nonexistent")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
serving.errors.DatasetError: /nonexistent: folder not found...
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flows.progress import progress

from serving.errors import DatasetError, ImageError
from serving.images import list_images, read_image
from serving.engine.preprocess import InputSpec, Roi, preprocess

LAYOUT_HINT = "expected MVTec AD layout: train/good/*.png, optional test/<type>/ and ground_truth/<type>/<stem>_mask.png"


@dataclass
class TestSample:
    """One test image with its label (0 good, 1 defect), defect type and optional mask."""

    path: Path
    label: int
    defect_type: str
    mask: Path | None = None


@dataclass
class Dataset:
    """A scanned data set: training normals and labelled test images."""

    root: Path
    train: list[Path]
    test: list[TestSample] = field(default_factory=list)

    @property
    def has_masks(self) -> bool:
        """True when every defective test image has a mask."""
        defects = [s for s in self.test if s.label]
        return bool(defects) and all(s.mask is not None for s in defects)


def _folder_images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: {what} folder not found; {LAYOUT_HINT}")
    files = list_images(folder)
    if not files:
        raise DatasetError(f"{folder}: no images (.png/.jpg/.bmp/.tif) in the {what} folder; add images or fix the path")
    return files


def scan_dataset(root: str | Path, *, need_train: bool = True, need_test: bool = False, min_train: int = 1) -> Dataset:
    """List a data set's files and check the layout; raise :class:`DatasetError` naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found; {LAYOUT_HINT}")
    train: list[Path] = []
    if need_train:
        train = _folder_images(root / "train" / "good", "train/good")
        if len(train) < min_train:
            raise DatasetError(
                f"{root / 'train' / 'good'}: {len(train)} good images, at least {min_train} needed "
                "(50-200 recommended); add more or lower enroll.min_good_images"
            )
    test: list[TestSample] = []
    test_dir = root / "test"
    if test_dir.is_dir():
        gt_dir = root / "ground_truth"
        for sub in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            label = 0 if sub.name == "good" else 1
            for img in list_images(sub):
                mask = gt_dir / sub.name / f"{img.stem}_mask.png"
                test.append(TestSample(img, label, sub.name, mask if mask.is_file() else None))
            if label and gt_dir.is_dir():
                _check_masks(sub, gt_dir / sub.name)
    elif need_test:
        raise DatasetError(f"{test_dir}: no test folder to evaluate on; {LAYOUT_HINT}")
    if need_test and not test:
        raise DatasetError(f"{test_dir}: no test images found; {LAYOUT_HINT}")
    return Dataset(root=root, train=train, test=test)


def _check_masks(image_dir: Path, mask_dir: Path) -> None:
    images = {p.stem for p in list_images(image_dir)}
    masks = {p.name[: -len("_mask.png")] for p in mask_dir.glob("*_mask.png")} if mask_dir.is_dir() else set()
    no_mask = sorted(images - masks)
    no_image = sorted(masks - images)
    if no_mask:
        raise DatasetError(
            f"{image_dir}: {len(no_mask)} image(s) without a mask in {mask_dir}, e.g. {no_mask[0]}; "
            f"add {mask_dir / (no_mask[0] + '_mask.png')} or remove ground_truth/ for image-level evaluation only"
        )
    if no_image:
        raise DatasetError(
            f"{mask_dir / (no_image[0] + '_mask.png')}: mask without an image in {image_dir}; "
            "add the image or delete the stray mask"
        )


def dataset_hash(paths: list[Path]) -> str:
    """sha256 over the names and bytes of ``paths`` (order-independent): the data version."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def load_tensors(
    paths: list[Path], spec: InputSpec, roi: Roi | None, *, skip_corrupt: bool = False, desc: str = "images"
) -> tuple[np.ndarray, list[Path], list[tuple[Path, str]]]:
    """Decode and preprocess ``paths`` -> (N x 3 x H x W float32, kept paths, skipped (path, reason)).

    Unreadable images stop the run with every bad file listed, unless ``skip_corrupt``;
    nothing is deleted either way. A ROI that does not fit an image always stops the run.
    """
    out, kept, bad = [], [], []
    for p in progress(paths, desc=desc, unit="img", enabled=len(paths) >= 50):
        try:
            img = read_image(p)
        except ImageError as exc:
            bad.append((p, str(exc)))
            continue
        out.append(preprocess(img, spec, roi, source=str(p)))
        kept.append(p)
    if bad and not skip_corrupt:
        listing = "\n".join(f"  {reason}" for _, reason in bad[:20])
        raise DatasetError(
            f"{len(bad)} unreadable image(s):\n{listing}\n"
            "fix or remove them, or pass --skip-corrupt to go on without them (they are listed, never deleted)"
        )
    if not out:
        raise DatasetError(f"no readable images among {len(paths)} file(s)")
    return np.stack(out), kept, bad
