"""Helpers shared by tests (import as ``from helpers import ...``; conftest modules are not importable by name)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
