"""Station config: the example validates; errors name the field and the allowed values."""

from pathlib import Path

import subprocess
import sys

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
    with pytest.raises(ConfigError, match="camera: unknown field; allowed: actuator, api, bundle"):
        parse_config(data)
    with pytest.raises(ConfigError, match="not found; copy station.example.yaml"):
        load_config(tmp_path / "nope.yaml")


INVALID_GATES = [
    ({"persistence_n": 3, "persistence_m": 2}, "gate.persistence_n: persistence_n (3) cannot exceed persistence_m (2)"),
    ({"min_area_mm2": 4.0}, "gate.px_per_mm: min_area_mm2 needs px_per_mm"),
    ({"class_confidence": {"crack": 1.5}}, "gate.class_confidence: confidences must lie in [0, 1]"),
    ({"sop": [{"name": "a", "action": "fail_above_score"}]}, "gate.sop.0: sop rule 'a': action fail_above_score needs 'value'"),
    ({"sop": [{"name": "a", "action": "fail_all"}, {"name": "a", "action": "pass_all"}]}, "gate.sop: SOP rule names must be unique"),
    ({"image_threshold": -1}, "gate.image_threshold: Input should be greater than 0"),
    ({"persistence_m": 0}, "gate.persistence_m: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize("gate, message", INVALID_GATES)
def test_invalid_gate_rules_are_refused_by_run_before_anything_starts(tmp_path, gate, message):
    data = example()
    data["gate"] = gate
    data["bundle"] = str(tmp_path / "no-bundle-here")  # were the engine loaded first, this would be the error
    cfg = tmp_path / "station.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "serving.cli", "run", "--config", str(cfg), "--no-api"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert message in out.stderr and "no-bundle-here" not in out.stderr + out.stdout, out.stderr


def test_duplicated_yaml_keys_and_syntax_errors_are_one_line_errors(tmp_path):
    cfg = tmp_path / "station.yaml"
    cfg.write_text("station_id: a\nbundle: b\nsource: {kind: replay, path: x}\nactuator:\n  delay_ms: 10\n  delay_ms: 3600000\n")
    with pytest.raises(ConfigError, match=r"line 6: key 'delay_ms' appears twice in the same section \(first on line 5\)"):
        load_config(cfg)
    cfg.write_text("station_id: a\nsource: [unclosed\n")
    with pytest.raises(ConfigError, match=r"station.yaml: not valid YAML: line 3, column 1"):
        load_config(cfg)


DANGEROUS = [
    ({"actuator": {"delay_ms": 3_600_000}}, "actuator.delay_ms: delay_ms 3.6e+06 is beyond max_delay_ms"),
    ({"actuator": {"modbus": {"coil_stop_line": 0}}}, "actuator.modbus.coil_stop_line: coil 0 is used by both "
                                                      "coil_reject and coil_stop_line"),
    ({"actuator": {"modbus": {"hr_sequence32": 7}}}, "actuator.modbus.hr_sequence32: hr_sequence (0), hr_verdict (1) "
                                                     "and hr_sequence32 (7, 8) must form one block"),
    ({"actuator": {"modbus": {"hr_encoder": 5}}}, "actuator.modbus.hr_encoder: register 5 is used by both hr_state"),
    ({"actuator": {"modbus": {"device_id": 256}}}, "actuator.modbus.device_id: Input should be less than or equal to 255"),
    ({"gate": {"deadline_ms": 200}, "actuator": {"delay_ms": 150}}, "gate: gate.deadline_ms (200) must be at most "
                                                                    "actuator.delay_ms (150)"),
    ({"actuator": {"pulse_owner": "plc", "kind": "gpio"}}, "actuator.pulse_owner: pulse_owner plc needs kind modbus"),
    ({"source": {"trigger": "modbus_counter"}, "actuator": {"kind": "none"}},
     "source: trigger modbus_counter needs actuator.kind modbus"),
]


@pytest.mark.parametrize("change, message", DANGEROUS)
def test_dangerous_configs_are_refused_with_the_field_named(change, message):
    data = example()
    for section, values in change.items():
        node = data.setdefault(section, {})
        for k, v in values.items():
            if isinstance(v, dict):
                node.setdefault(k, {}).update(v)
            else:
                node[k] = v
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="station.yaml")
    assert message in str(err.value), str(err.value)


def test_unit_id_255_is_accepted():
    data = example()
    data["actuator"]["modbus"]["device_id"] = 255
    assert parse_config(data).actuator.modbus.device_id == 255


def test_the_readme_register_map_is_the_one_the_code_uses():
    from serving.lineio.actuation.modbus_map import ModbusMap, register_table

    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- register-map:")[1].split("-->", 1)[1].split("<!-- /register-map -->")[0].strip()
    assert table == register_table(ModbusMap(hr_encoder=10, hr_plc_clock=11, hr_trigger_count=12))


def test_relative_paths_are_the_config_folder_s_including_the_detector(tmp_path):
    data = yaml.safe_load((ROOT / "station.example.yaml").read_text())
    data.update(bundle="models/anomaly", detector_bundle="../models/detector")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "station.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(tmp_path / "site" / "station.yaml")
    assert cfg.bundle == str((tmp_path / "site" / "models" / "anomaly").resolve())
    assert cfg.detector_bundle == str((tmp_path / "models" / "detector").resolve())
