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
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from serving.errors import ConfigError
from serving.drift.stability import StabilityConfig
from serving.engine.config import BundleConfig
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
    """The operator page and API (limits and keys: SECURITY.md)."""

    host: str = Field("127.0.0.1", description="address to listen on: loopback only unless set (then use TLS)")
    port: int = Field(8000, gt=0, lt=65536)
    users: dict[str, UserConfig] = {}
    demo: bool = Field(False, description="a demo station: the shipped demo passwords are allowed and the page says "
                                          "DEMO; without it the station refuses to start with them")
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    audit_log: str = "station-data/audit.jsonl"
    audit_key: str | None = Field(None, description="HMAC key of the audit chain, created 0600 on the first start "
                                                    "(default: audit.key beside the log); keep a copy off the station")
    audit_head: str | None = Field(None, description="the chain's last index and MAC, kept apart from the log "
                                                     "(default: audit.head beside it)")
    gate_overrides: str | None = Field(None, description="gate changes made through the API, kept across restarts "
                                                         "(default: gate-overrides.json beside the audit log)")
    device_keys: str = Field("station-data/device-keys.json", description="hashed per-device API keys (HTTP "
                                                                          "trigger), managed by engineers")
    review_size: int = Field(5, ge=3, le=5)
    tls_cert: str | None = Field(None, description="PEM certificate (chain): serve HTTPS; needs tls_key")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert (mode 600)")
    max_body_kb: int = Field(1024, ge=1, le=1024 * 1024, description="largest request body but a bundle upload "
                                                                     "(bundles.max_upload_mb); more gets 413")
    login_per_minute: float = Field(10.0, gt=0, description="login attempts per client address per minute (as a "
                                                            "burst too); more get 429 before any password is hashed")
    logins_per_second: float = Field(2.0, gt=0, description="login attempts per second from all addresses together")
    login_lockout_s: float = Field(300.0, gt=0, description="the longest wait repeated failed logins of one user "
                                                           "impose (doubling from the fourth failure)")
    max_connections: int = Field(64, ge=4, description="concurrent connections and requests; more get 503")
    worker_threads: int = Field(8, ge=2, le=64, description="threads serving blocking requests")

    @model_validator(mode="after")
    def _tls_pair(self) -> "ApiConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise field_error(missing, "TLS needs both tls_cert and tls_key (PEM files); set both or neither", None)
        return self

    def beside_log(self, value: str | None, name: str) -> str:
        """``value``, or the file ``name`` in the audit log's folder."""
        return value or str(Path(self.audit_log).with_name(name))


class StationConfig(StrictModel):
    """A station: ``lineguard-station run --config station.yaml``."""

    station_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            description="letters, digits, '.', '_' or '-': it names the station's folder in the sync")
    bundle: str
    detector_bundle: str | None = Field(None, description="a YOLO detector bundle run beside the anomaly model")
    bundles: BundleConfig = Field(description="trusted signing keys and the store of deployed versions")
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
    _file: Path | None = PrivateAttr(None)  # set by load_config: where setup mode writes a saved ROI

    @property
    def source_file(self) -> Path | None:
        """The YAML file this config was read from (None when it was built in code)."""
        return self._file

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
        cfg.bundles.trusted_keys = [rel(k) for k in cfg.bundles.trusted_keys]
        cfg.bundles.store = rel(cfg.bundles.store)
        cfg.source.path = rel(cfg.source.path)
        cfg.evidence.dir = rel(cfg.evidence.dir)
        cfg.evidence.key_file = rel(cfg.evidence.key_file)
        cfg.evidence.sync_url = rel(cfg.evidence.sync_url)
        cfg.evidence.sync_secret_file = rel(cfg.evidence.sync_secret_file)
        cfg.api.audit_log = rel(cfg.api.audit_log)
        cfg.api.device_keys = rel(cfg.api.device_keys)
        for name in ("audit_key", "audit_head", "gate_overrides", "tls_cert", "tls_key"):
            setattr(cfg.api, name, rel(getattr(cfg.api, name)))
    return cfg


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def load_config(path: str | Path) -> StationConfig:
    """Read and validate a station YAML file (paths in it are relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: station config not found; copy station.example.yaml and edit it")
    cfg = parse_config(read_yaml(path), source=str(path), base=path.parent)
    cfg._file = path.resolve()
    return cfg
