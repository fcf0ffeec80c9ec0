"""Station fixtures: configs built around the real test bundle."""

from pathlib import Path

import pytest

from serving.auth import hash_password
from serving.config import parse_config
from serving.evidence import generate_key

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
        "gate": {"min_area_px": 0},
        "actuator": {"kind": "none", "delay_ms": 150, "pulse_ms": 20},
        "evidence": {"dir": str(tmp / "evidence"), "key_file": str(key), "pass_sample_rate": 1.0},
        "api": {"users": {"olga": {"role": "operator", "password_hash": hash_password("op-pass", 1000)},
                          "eddie": {"role": "engineer", "password_hash": hash_password("eng-pass", 1000)}},
                "audit_log": str(tmp / "audit.jsonl")},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return parse_config(data)


@pytest.fixture()
def make_config(tmp_path, bundle_dir, test_images):
    return lambda **sections: station_config(tmp_path, bundle_dir, test_images, **sections)
