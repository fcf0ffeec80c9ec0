"""Helpers shared by tests (import as ``from helpers import ...``; conftest modules are not importable by name)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta
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
                 "export.ivf_min_bank": 0,  # the small test bundles carry the search index the station runs
                 "export.signing_key": str(pipeline_test_key()[0]),
                 "model.batch_size": 8, **{f"model.{k}": v for k, v in model.items()}}
    return load_params(ROOT / "params.yaml", overrides)


PASSWORDS = {"olga": "op-pass", "eddie": "eng-pass"}
TEST_KEYS = ROOT / ".lineguard" / "test-keys"  #: the test suite's pipeline signing key (made on first use)


def pipeline_test_key() -> tuple[Path, Path]:
    """(private, public) key files the test bundles are signed with and test stations trust."""
    from serving.engine.signing import create_keypair

    private, public = TEST_KEYS / "pipeline.key", TEST_KEYS / "pipeline.pub"
    if not (private.exists() and public.exists()):
        private.unlink(missing_ok=True)
        public.unlink(missing_ok=True)
        create_keypair(TEST_KEYS / "pipeline")
    return private, public


def sign_test_bundle(bundle: Path) -> Path:
    """Sign ``bundle`` with the test key unless its signature already verifies with it."""
    from serving.engine.bundle import MANIFEST
    from serving.engine.signing import Trust, load_private_key, sign_manifest, verify_signature
    from serving.errors import BundleError

    private, public = pipeline_test_key()
    try:
        verify_signature(bundle, (bundle / MANIFEST).read_bytes(), Trust.from_files([str(public)]))
    except BundleError:
        sign_manifest(bundle, load_private_key(private), "pipeline")
    return bundle


def station_config(tmp: Path, bundle_dir: Path, images: Path, **sections):
    """A valid config dict for a replay station, overridable per section."""
    key = tmp / "evidence.key"
    if not key.exists():
        generate_key(key)
    data = {
        "station_id": "test-line",
        "bundle": str(bundle_dir),
        "source": {"kind": "replay", "path": str(images), "rate_hz": 20},
        "gate": {"min_area_px": 0, "deadline_ms": 140},
        "actuator": {"kind": "none", "delay_ms": 150, "pulse_ms": 20},
        "evidence": {"dir": str(tmp / "evidence"), "key_file": str(key), "pass_sample_rate": 1.0},
        "bundles": {"trusted_keys": [str(pipeline_test_key()[1])], "store": str(tmp / "bundles")},
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
    raw.pop("search", None)
    shutil.rmtree(dst / "search", ignore_errors=True)
    raw["explain"].pop("fingerprints", None)
    raw["explain"].pop("reference", None)
    for k in ("frr_expected", "frr_interval", "n_normals", "folds"):
        raw["thresholds"].pop(k, None)
    for k in ("parent_version", "created_by"):
        raw["provenance"].pop(k, None)
    names = [n for n in raw["files"] if (dst / n).exists()]
    raw["files"] = {k: v.model_dump() for k, v in file_entries(dst, names).items()}
    (dst / MANIFEST).write_text(json.dumps(raw, indent=2))
    return resign(dst)


def edit_manifest(bundle: Path, change) -> dict:
    """Apply ``change`` to the bundle's manifest JSON in place (hashes and signature untouched)."""
    from serving.engine.bundle import MANIFEST

    raw = json.loads((bundle / MANIFEST).read_text())
    change(raw)
    (bundle / MANIFEST).write_text(json.dumps(raw, indent=2))
    return raw


def resign(bundle: Path) -> Path:
    """Sign as the pipeline would (an insider with the key, or the pipeline itself)."""
    from serving.engine.signing import load_private_key, sign_manifest

    sign_manifest(bundle, load_private_key(pipeline_test_key()[0]), "pipeline")
    return bundle


def new_version(src: Path, dst: Path, *, hours: float = 1.0, threshold_factor: float = 1.0) -> Path:
    """A later (or, with negative hours, earlier) signed version of bundle ``src``, as an export would write it."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("enrollment.pt"))

    def change(raw):
        created = datetime.fromisoformat(raw["provenance"]["created_at"]) + timedelta(hours=hours)
        raw["provenance"]["created_at"] = created.isoformat()
        raw["bundle_version"] = f"patchcore-{created:%Y%m%dT%H%M%SZ}-test{abs(int(hours * 10)):04d}"
        raw["thresholds"]["image"] *= threshold_factor
    edit_manifest(dst, change)
    return resign(dst)
