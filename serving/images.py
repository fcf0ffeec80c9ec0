"""Decoding images and frames into one canonical form: HxWx3 uint8 RGB.

>>> import numpy as np
>>> to_rgb(np.zeros((4, 5), np.uint8)).shape
(4, 5, 3)
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from serving.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def to_rgb(frame: np.ndarray, *, source: str = "frame", bgr: bool = False) -> np.ndarray:
    """Return ``frame`` as a contiguous HxWx3 uint8 RGB array.

    Accepts grayscale (HxW or HxWx1), RGB/BGR (HxWx3) and RGBA/BGRA (HxWx4),
    8- or 16-bit. ``bgr=True`` says the channels arrive in OpenCV order.
    Raises :class:`ImageError` naming ``source`` for anything else.
    """
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise ImageError(f"{source}: empty or missing image data; check the camera or file")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ImageError(f"{source}: pixel type {frame.dtype} is not supported; send 8- or 16-bit images")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return np.ascontiguousarray(np.repeat(frame[:, :, None], 3, axis=2))
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ImageError(
            f"{source}: shape {frame.shape} is not an image; expected HxW, HxWx3 or HxWx4"
        )
    frame = frame[:, :, :3]
    if bgr:
        frame = frame[:, :, ::-1]
    return np.ascontiguousarray(frame)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_damage(data: bytes) -> str | None:
    """Why a PNG file is damaged (a chunk cut short or failing its CRC), or None if every chunk checks out.

    Checked before decoding: libpng prints its own "libpng error" lines straight to stderr, which a
    person then reads instead of the message that names the file.
    """
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return f"chunk {kind.decode('latin-1')!r} cut short (file truncated)"
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"chunk {kind.decode('latin-1')!r} fails its CRC (file corrupt)"
        if kind == b"IEND":
            return None
        pos = end
    return "no end chunk (file truncated)"


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file (PNG, JPEG, BMP, TIFF; gray or colour) as HxWx3 uint8 RGB.

    Raises :class:`ImageError` naming the file when it is missing, unreadable or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"{path}: file is empty; re-capture or remove it")
    if data[:8].tobytes() == PNG_SIGNATURE and (damage := png_damage(data.tobytes())):
        raise ImageError(f"{path}: damaged PNG: {damage}; re-capture or remove it")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{path}: cannot decode image (corrupt or not an image); re-capture or remove it")
    return to_rgb(img, source=str(path), bgr=img.ndim == 3 and img.shape[2] >= 3)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask as an HxW bool array (any non-zero pixel is defect)."""
    path = Path(path)
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if img is None:
        raise ImageError(f"{path}: cannot read mask; it must be a grayscale image, 0 = good, >0 = defect")
    return img > 0


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
