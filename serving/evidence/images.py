"""A part's evidence images on disk: written whole or not at all, encrypted, and only while records keep room.

A part's crop, overlay and explanation are written under one stem (``<trigger ns>_<seq>_<kind>.bin``); if
one of them fails (a full disk, an I/O error) the others are removed, so a record never names half a part.
At start-up, files no record names (temporaries of a crash, images of a record that never committed) go.

>>> write_part_images(vault, space, rec, {"crop_file": png})  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from serving.evidence.crypto import ImageVault
from serving.evidence.record import InspectionRecord
from serving.evidence.space import MB, Space

SUFFIXES = {"crop_file": "crop", "overlay_file": "overlay", "explain_file": "explain"}


def write_part_images(vault: ImageVault, space: Space, rec: InspectionRecord,
                      images: dict[str, bytes | None]) -> tuple[InspectionRecord, str | None]:
    """Write ``images`` (record field → bytes) for ``rec``; return (the record naming what was written, why
    nothing was written or None). Below the records' reserve no image is written, and the record says so."""
    images = {field: data for field, data in images.items() if data}
    if not images:
        return rec, None
    need = sum(len(d) + 64 for d in images.values())
    room, free = space.room_for_images(need)
    if not room:  # records ahead of images: the reserve stays for them
        return rec.model_copy(update={"images_dropped": True}), (
            f"disk nearly full: {free / MB:.1f} MB free, evidence.min_free_mb {space.reserve / MB:.3g} MB is kept "
            "for records")
    stem = f"{rec.t_trigger_ns}_{rec.seq}"
    files, size = {}, 0
    try:
        for field, data in images.items():
            name = f"{stem}_{SUFFIXES[field]}.bin"
            files[field] = name
            size += vault.write(name, data)
    except OSError as exc:
        for name in files.values():
            (vault.folder / name).unlink(missing_ok=True)
            (vault.folder / (name + ".tmp")).unlink(missing_ok=True)
        return rec.model_copy(update={"images_dropped": True}), exc.strerror or str(exc)
    return rec.model_copy(update={**files, "image_bytes": size}), None


def sweep_unnamed(folder: Path, named: set[str]) -> None:
    """Remove temporaries and the image files no record in ``named`` refers to."""
    for stray in folder.glob("*.tmp"):
        stray.unlink(missing_ok=True)
    for orphan in folder.glob("*.bin"):
        if orphan.name not in named:
            orphan.unlink(missing_ok=True)
