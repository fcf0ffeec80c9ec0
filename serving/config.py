"""Station configuration: one YAML file, validated by pydantic, errors that name the field.

Each room owns its section's model (``source`` in line I/O, ``gate`` in the gate, ``actuator``
and ``evidence`` in theirs); :class:`StationConfig` composes them and adds the web settings.
Every check, cross-field ones included, runs here, before anything starts.

>>> cfg = load_config("station.example.yaml")  # doctest: +SKIP
>>> cfg.actuator.kind                          # doctest: +SKIP
'modbus'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from serving.errors import ConfigError
from serving.drift.stability import StabilityConfig
from serving.evidence.config import EvidenceConfig
from serving.gate.rules import GateRules
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.config import SourceConfig
from serving.strict import StrictModel, describe_errors, field_error


class UserConfig(StrictModel):
    """A person who may log in: role and a pbkdf2 password hash (``lineguard-station hash-password``)."""

    role: Literal["operator", "engineer"]
    password_hash: str


class ApiConfig(StrictModel):
    """The operator page and API."""

    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    users: dict[str, UserConfig] = {}
    session_hours: float = Field(12.0, gt=0)
    audit_log: str = "station-data/audit.jsonl"
    device_keys: str = Field("station-data/device-keys.json", description="hashed per-device API keys (HTTP "
                                                                          "trigger), managed by engineers")
    review_size: int = Field(5, ge=3, le=5)


class StationConfig(StrictModel):
    """A station: ``lineguard-station run --config station.yaml``."""

    station_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            description="letters, digits, '.', '_' or '-': it names the station's folder in the sync")
    bundle: str
    detector_bundle: str | None = Field(None, description="a YOLO detector bundle run beside the anomaly model")
    classes: list[str] = Field([], description="the product's defect classes: the operator's quick tags; a "
                                              "detector bundle must name only these")
    source: SourceConfig
    roi: str | None = Field(None, description="x,y,w,h; overrides the bundle's ROI for this camera")
    gate: GateRules = GateRules()
    actuator: ActuatorConfig = ActuatorConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    api: ApiConfig = ApiConfig()
    stability: StabilityConfig = StabilityConfig()
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames (replay, tests)")

    @model_validator(mode="after")
    def _timing_holds(self) -> "StationConfig":
        a, s = self.actuator, self.source
        if a.kind != "none" and a.pulse_owner == "station" and a.delay_mode == "time" and \
                self.gate.deadline_ms > a.delay_ms - a.start_tolerance_ms:
            raise field_error("gate", f"gate.deadline_ms ({self.gate.deadline_ms:g}) must be at most actuator.delay_ms "
                                      f"({a.delay_ms:g}) minus start_tolerance_ms ({a.start_tolerance_ms:g}): a decision "
                                      "accepted in time must still be in time for its reject pulse",
                              self.gate.deadline_ms)
        if s.trigger == "modbus_counter" and (a.kind != "modbus" or a.modbus.hr_trigger_count is None or
                                              a.modbus.hr_plc_clock is None):
            raise field_error("source", "trigger modbus_counter needs actuator.kind modbus with modbus.hr_trigger_count "
                                        "and modbus.hr_plc_clock", s.trigger)
        return self


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (YAML itself keeps the last silently)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice in the same section "
                              f"(first on line {seen[key] + 1}); keep one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: Path) -> dict:
    """A YAML mapping from ``path``; syntax errors and duplicated keys become one-line :class:`ConfigError`s."""
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (station_id, bundle, source, ...)")
    return data


def parse_config(data: dict, *, source: str = "config", base: Path | None = None) -> StationConfig:
    """Validate a config mapping; relative paths resolve against ``base`` (the config file's folder)."""
    try:
        cfg = StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid station config:\n{_indent(describe_errors(exc, model=StationConfig))}") from None
    if base is not None:
        def rel(p: str | None) -> str | None:
            return str((base / p).resolve()) if p and not Path(p).is_absolute() and "://" not in p else p

        cfg.bundle = rel(cfg.bundle)
        cfg.detector_bundle = rel(cfg.detector_bundle)
        cfg.source.path = rel(cfg.source.path)
        cfg.evidence.dir = rel(cfg.evidence.dir)
        cfg.evidence.key_file = rel(cfg.evidence.key_file)
        cfg.evidence.sync_url = rel(cfg.evidence.sync_url)
        cfg.api.audit_log = rel(cfg.api.audit_log)
        cfg.api.device_keys = rel(cfg.api.device_keys)
    return cfg


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def load_config(path: str | Path) -> StationConfig:
    """Read and validate a station YAML file (paths in it are relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: station config not found; copy station.example.yaml and edit it")
    return parse_config(read_yaml(path), source=str(path), base=path.parent)
