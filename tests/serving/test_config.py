"""Station config: the example validates; errors name the field and the allowed values."""

from pathlib import Path

import pytest
import yaml

from serving.config import load_config, parse_config
from serving.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def example() -> dict:
    return yaml.safe_load((ROOT / "station.example.yaml").read_text())


def test_example_config_is_valid_and_resolves_paths():
    cfg = load_config(ROOT / "station.example.yaml")
    assert cfg.actuator.kind == "modbus" and cfg.source.kind == "replay"
    assert Path(cfg.bundle).is_absolute() and cfg.bundle.endswith("models/elpv/bundle")
    assert set(cfg.api.users) == {"operator", "engineer"}


@pytest.mark.parametrize("path, value, expect", [
    (("actuator", "kind"), "plc", r"actuator.kind: Input should be 'modbus', 'gpio' or 'none' \(got 'plc'\)"),
    (("source", "rate_hz"), -1, r"source.rate_hz: Input should be greater than 0"),
    (("gate", "on_error"), "ignore", r"gate.on_error: .*'reject' or 'pass'"),
    (("evidence", "retention_h"), "two days", r"evidence.retention_h"),
    (("api", "users"), {"bob": {"role": "admin", "password_hash": "x"}}, r"api.users.bob.role"),
])
def test_errors_name_the_field_and_allowed_values(path, value, expect):
    data = example()
    data[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=expect):
        parse_config(data, source="station.yaml")


def test_replay_needs_a_path_and_unknown_sections_are_refused(tmp_path):
    data = example()
    data["source"].pop("path")
    with pytest.raises(ConfigError, match="source.path is required"):
        parse_config(data)
    data = example()
    data["camera"] = {}
    with pytest.raises(ConfigError, match="camera: Extra inputs are not permitted"):
        parse_config(data)
    with pytest.raises(ConfigError, match="not found; copy station.example.yaml"):
        load_config(tmp_path / "nope.yaml")
