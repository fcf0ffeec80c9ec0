"""Helpers shared by tests (import as ``from helpers import ...``; conftest modules are not importable by name)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.api.auth import hash_password
from serving.config import parse_config
from serving.evidence.crypto import generate_key

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
BOTTLE = SHARED_DATA / "mvtec_ad" / "bottle"


def require_bottle() -> Path:
    """Skip (with the reason) when ../shared/data is not beside the checkout."""
    if not (BOTTLE / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle not found at {BOTTLE} (../shared/data is only present in the Lineguard workplace)")
    return BOTTLE


def link_subset(src: Path, dst: Path, n: int) -> None:
    """Symlink the first ``n`` files of ``src`` into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir())[:n]:
        os.symlink(p, dst / p.name)


def fast_params(**model):
    """Pipeline params for small, quick real runs (no MLflow unless a test asks)."""
    from flows.params import load_params

    overrides = {"model.input_size": 128, "tracking.enabled": False, "export.parity_images": 4,
                 "model.batch_size": 8, **{f"model.{k}": v for k, v in model.items()}}
    return load_params(ROOT / "params.yaml", overrides)


PASSWORDS = {"olga": "op-pass", "eddie": "eng-pass"}


def station_config(tmp: Path, bundle: Path, images: Path, **sections):
    """A valid config dict for a replay station, overridable per section."""
    key = tmp / "evidence.key"
    if not key.exists():
        generate_key(key)
    data = {
        "station_id": "test-line",
        "bundle": str(bundle),
        "source": {"kind": "replay", "path": str(images), "rate_hz": 20},
        "gate": {"min_area_px": 0, "deadline_ms": 140},
        "actuator": {"kind": "none", "delay_ms": 150, "pulse_ms": 20},
        "evidence": {"dir": str(tmp / "evidence"), "key_file": str(key), "pass_sample_rate": 1.0},
        "api": {"users": {"olga": {"role": "operator", "password_hash": hash_password("op-pass", 1000)},
                          "eddie": {"role": "engineer", "password_hash": hash_password("eng-pass", 1000)}},
                "audit_log": str(tmp / "audit.jsonl"), "device_keys": str(tmp / "device-keys.json")},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return parse_config(data)


def schema1_bundle(src: Path, dst: Path) -> Path:
    """A copy of bundle ``src`` as the previous schema wrote it: no fingerprint output, no baseline, no stated FRR.

    The graph keeps its first three outputs (onnx needed: skips in the station-only venv)."""
    import json
    import shutil

    onnx = pytest.importorskip("onnx", reason="rewriting a graph needs onnx (pipeline venv)")
    from serving.engine.bundle import MANIFEST, file_entries

    shutil.copytree(src, dst)
    graph = onnx.load(dst / "model.onnx")
    keep = [o for o in graph.graph.output if o.name != "embedding"]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    onnx.save(graph, dst / "model.onnx")
    (dst / "explain" / "fingerprints.npy").unlink(missing_ok=True)
    (dst / "explain" / "reference.json").unlink(missing_ok=True)
    raw = json.loads((dst / MANIFEST).read_text())
    raw["schema_version"], raw["outputs"] = 1, ["score", "anomaly_map", "patch_match"]
    raw.pop("baseline", None)
    raw["explain"].pop("fingerprints", None)
    raw["explain"].pop("reference", None)
    for k in ("frr_expected", "frr_interval", "n_normals", "folds"):
        raw["thresholds"].pop(k, None)
    for k in ("parent_version", "created_by"):
        raw["provenance"].pop(k, None)
    names = [n for n in raw["files"] if (dst / n).exists()]
    raw["files"] = {k: v.model_dump() for k, v in file_entries(dst, names).items()}
    (dst / MANIFEST).write_text(json.dumps(raw, indent=2))
    return dst
