"""Evidence out of the station for offline study: records and their pictures, decrypted, in plain files.

Needs the evidence key (``evidence.key_file``): only someone who may read it -- an engineer -- can
export. Writes ``records.jsonl`` and ``records.csv`` and, per record with pictures, ``images/<seq>_crop.png``,
``images/<seq>_overlay.png`` and, for an explained FAIL, ``images/<seq>_explain.jpg``. With a capture id, writes
instead the parts an operator confirmed as normal, as ``good/<seq>.png`` ROI crops with ``capture.json`` beside
them: the folder ``lineguard recalibrate --normals`` reads.

>>> export_evidence(cfg.evidence, cfg.station_id, "evidence-export", since=time.time() - 3600)   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from serving.alarms import Alarms
from serving.errors import ConfigError
from serving.evidence.config import EvidenceConfig
from serving.evidence.store import EvidenceStore

CSV_FIELDS = ("id", "seq", "boot_id", "wall_time", "verdict", "rule", "score", "area_px", "disposition",
              "disposition_class", "disposition_user", "bundle_version", "crop", "overlay", "explain")


def export_evidence(cfg: EvidenceConfig, station_id: str, out: str | Path, *, since: float | None = None,
                    until: float | None = None, verdict: str | None = None) -> dict[str, int]:
    """Write the records (and their decrypted pictures) between ``since`` and ``until`` to ``out``."""
    alarms = Alarms()
    store = EvidenceStore(cfg, alarms, station_id)
    if store.vault is None:
        store.close()
        raise ConfigError(f"evidence.key_file {cfg.key_file}: cannot read the key, so nothing can be decrypted; "
                          "export needs the engineer's copy of the evidence key")
    where, args = ["1=1"], []
    for clause, value in (("wall_time >= ?", since), ("wall_time <= ?", until), ("verdict = ?", verdict)):
        if value is not None:
            where.append(clause)
            args.append(value)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    counts = {"records": 0, "images": 0, "unreadable_images": 0}
    try:
        rows = store.query(" AND ".join(where), tuple(args), limit=10_000_000, order="id")
        with open(out / "records.jsonl", "w") as jl, open(out / "records.csv", "w", newline="") as fh:
            table = csv.DictWriter(fh, CSV_FIELDS)
            table.writeheader()
            for r in rows:
                files = {}
                for kind, name, ext in (("crop", r.crop_file, "png"), ("overlay", r.overlay_file, "png"),
                                        ("explain", r.explain_file, "jpg")):
                    if not name:
                        continue
                    try:
                        target = out / "images" / f"{r.seq:08d}_{kind}.{ext}"
                        target.write_bytes(store.read_image(name))
                        files[kind] = str(target.relative_to(out))
                        counts["images"] += 1
                    except Exception:  # noqa: BLE001 - a damaged or foreign file is listed, the export goes on
                        counts["unreadable_images"] += 1
                jl.write(r.model_dump_json() + "\n")
                pictures = ("crop", "overlay", "explain")
                table.writerow({**{k: getattr(r, k, None) for k in CSV_FIELDS if k not in pictures}, **files})
                counts["records"] += 1
    finally:
        store.close()
    return counts


#: marks a folder of ROI crops (not full frames): recalibration must not crop them again
CAPTURE_FILE = "capture.json"


def export_capture(cfg: EvidenceConfig, station_id: str, capture_id: str, out: str | Path) -> dict[str, int]:
    """Write the confirmed normals of one capture as ``out/good/*.png`` crops and ``out/capture.json``."""
    store = EvidenceStore(cfg, Alarms(), station_id)
    try:
        if store.vault is None:
            raise ConfigError(f"evidence.key_file {cfg.key_file}: cannot read the key; exporting normals needs it")
        rows = store.query("capture_id=?", (capture_id,), limit=10_000_000, order="id")
        if not rows:
            raise ConfigError(f"capture {capture_id}: no records on this station (see GET /api/capture for its id)")
        normal = [r for r in rows if r.disposition == "normal"]
        if not normal:
            raise ConfigError(f"capture {capture_id}: none of its {len(rows)} parts is confirmed as normal yet; "
                              "confirm them on the operator page first")
        good = Path(out) / "good"
        good.mkdir(parents=True, exist_ok=True)
        written, unreadable = [], []
        for r in normal:
            try:
                (good / f"{r.seq:08d}.png").write_bytes(store.read_image(r.crop_file))
                written.append(r.seq)
            except Exception:  # noqa: BLE001 - listed, the export goes on
                unreadable.append(r.seq)
        meta = {"capture_id": capture_id, "station_id": station_id, "roi_applied": True,
                "bundle_versions": sorted({r.bundle_version for r in normal}),
                "confirmed_by": sorted({r.disposition_user for r in normal if r.disposition_user}),
                "captured": len(rows), "normal": len(written), "excluded": len(rows) - len(normal),
                "unreadable": unreadable, "first_time": rows[0].wall_time, "last_time": rows[-1].wall_time}
        (Path(out) / CAPTURE_FILE).write_text(json.dumps(meta, indent=2))
        return {"normal": len(written), "excluded": meta["excluded"], "unreadable_images": len(unreadable)}
    finally:
        store.close()
