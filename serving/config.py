"""Station configuration: one YAML file, validated by pydantic, errors that name the field.

>>> cfg = load_config("station.example.yaml")  # doctest: +SKIP
>>> cfg.actuator.kind
'modbus'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.errors import ConfigError
from serving.gate import SopRule


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """Where frames come from. ``replay`` (a folder or video) is the embedded default."""

    kind: Literal["replay", "opencv"] = "replay"
    path: str | None = Field(None, description="replay: image folder or video file")
    rate_hz: float = Field(10.0, gt=0, description="replay frame rate")
    loop: bool = False
    device: str | int | None = Field(None, description="opencv: camera index, RTSP URL or file")
    trigger: Literal["free_run", "modbus", "http"] = "free_run"
    trigger_coil: int = Field(4, ge=0, description="modbus trigger: coil the PLC sets to request a capture")
    trigger_poll_ms: float = Field(1.0, gt=0)
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(10.0, gt=0)
    queue_size: int = Field(4, ge=1, description="frames waiting beyond this are dropped and counted")

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.kind == "replay" and not self.path:
            raise ValueError("source.path is required for kind 'replay' (a folder of images or a video file)")
        if self.kind == "opencv" and self.device is None:
            raise ValueError("source.device is required for kind 'opencv' (camera index, RTSP URL or file)")
        return self


class GateConfig(_Strict):
    """Gate rules on top of the bundle's calibration (thresholds may be overridden here)."""

    image_threshold: float | None = None
    pixel_threshold: float | None = None
    min_area_px: float = Field(0.0, ge=0)
    min_area_mm2: float | None = Field(None, ge=0)
    px_per_mm: float | None = Field(None, gt=0)
    persistence_n: int = Field(1, ge=1)
    persistence_m: int = Field(1, ge=1)
    class_confidence: dict[str, float] = {}
    sop: list[SopRule] = []
    on_error: Literal["reject", "pass"] = "reject"
    deadline_ms: float = Field(200.0, gt=0, description="a decision later than this after the trigger is 'deadline_missed'")


class ModbusConfig(_Strict):
    """Register map on the PLC (0-based Modbus addresses)."""

    host: str = "127.0.0.1"
    port: int = Field(5020, gt=0, lt=65536)
    device_id: int = Field(1, ge=0, le=247)
    timeout_s: float = Field(0.5, gt=0)
    hr_sequence: int = 0
    hr_verdict: int = 1
    hr_encoder: int = 10
    coil_reject: int = 0
    coil_result_ready: int = 1
    coil_ack: int = 2
    coil_stop_line: int = 3


class GpioConfig(_Strict):
    """A reject output on a GPIO line (libgpiod or Jetson.GPIO)."""

    chip: str = "gpiochip0"
    line: int = Field(17, ge=0)
    active_high: bool = True


class ActuatorConfig(_Strict):
    """How and when the reject output fires."""

    kind: Literal["modbus", "gpio", "none"] = "none"
    delay_mode: Literal["time", "encoder"] = "time"
    delay_ms: float = Field(30.0, ge=0, description="time mode: pulse starts this long after the trigger")
    delay_counts: int = Field(0, ge=0, description="encoder mode: pulse starts this many counts after the trigger")
    pulse_ms: float = Field(20.0, gt=0)
    late_policy: Literal["stop_line", "reject_now", "alarm_only"] = "stop_line"
    retry_initial_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    modbus: ModbusConfig = ModbusConfig()
    gpio: GpioConfig = GpioConfig()


class EvidenceConfig(_Strict):
    """The encrypted evidence buffer."""

    dir: str = "station-data/evidence"
    key_file: str = "station-data/evidence.key"
    retention_h: float = Field(48.0, gt=0)
    quota_mb: float = Field(2048.0, gt=0)
    pass_sample_rate: float = Field(0.05, ge=0, le=1, description="fraction of PASS frames whose images are kept")
    sync_url: str | None = Field(None, description="a folder (file:// or path) evidence is copied to when reachable")
    sync_interval_s: float = Field(30.0, gt=0)


class UserConfig(_Strict):
    """A person who may log in: role and a pbkdf2 password hash (``lineguard-station hash-password``)."""

    role: Literal["operator", "engineer"]
    password_hash: str


class ApiConfig(_Strict):
    """The operator page and API."""

    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    users: dict[str, UserConfig] = {}
    session_hours: float = Field(12.0, gt=0)
    audit_log: str = "station-data/audit.jsonl"
    review_size: int = Field(5, ge=3, le=5)


class StationConfig(_Strict):
    """A station: ``lineguard-station run --config station.yaml``."""

    station_id: str = Field(min_length=1)
    bundle: str
    source: SourceConfig
    roi: str | None = Field(None, description="x,y,w,h; overrides the bundle's ROI for this camera")
    gate: GateConfig = GateConfig()
    actuator: ActuatorConfig = ActuatorConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    api: ApiConfig = ApiConfig()
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames (replay, tests)")


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "literal_error":
            msg += f" (got {e['input']!r})"
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict, *, source: str = "config", base: Path | None = None) -> StationConfig:
    """Validate a config mapping; relative paths resolve against ``base``."""
    try:
        cfg = StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid station config:\n{_format_errors(exc)}") from None
    if base is not None:
        def rel(p: str | None) -> str | None:
            return str((base / p).resolve()) if p and not Path(p).is_absolute() and "://" not in p else p

        cfg.bundle = rel(cfg.bundle)
        cfg.source.path = rel(cfg.source.path)
        cfg.evidence.dir = rel(cfg.evidence.dir)
        cfg.evidence.key_file = rel(cfg.evidence.key_file)
        cfg.evidence.sync_url = rel(cfg.evidence.sync_url)
        cfg.api.audit_log = rel(cfg.api.audit_log)
    return cfg


def load_config(path: str | Path) -> StationConfig:
    """Read and validate a station YAML file (paths in it are relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: station config not found; copy station.example.yaml and edit it")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (station_id, bundle, source, ...)")
    return parse_config(data, source=str(path), base=path.parent)
