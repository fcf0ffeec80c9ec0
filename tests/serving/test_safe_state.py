"""Safe state with a real station process and the PLC simulator: SIGTERM, kill -9 and PLC-owned pulses."""

import signal
import subprocess
import sys
import time

import pytest
import yaml

from services import coil_edges, events, plc_sim, pulses

pytestmark = [pytest.mark.services, pytest.mark.slow]
SIM_MAP = {"hr_encoder": 10, "hr_plc_clock": 11, "hr_trigger_count": 12}


def start_station(tmp_path, make_config, port, **actuator):
    cfg = make_config(source={"rate_hz": 4, "loop": True},
                      gate={"sop": [{"name": "all", "action": "fail_all"}], "deadline_ms": 40},
                      actuator={"kind": "modbus", "delay_ms": 60, "pulse_ms": 40,
                                "modbus": {"port": port, "heartbeat_ms": 50, **SIM_MAP}, **actuator})
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    log = open(tmp_path / "station.log", "w")  # noqa: SIM115 - closed by the caller's process end
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "run", "--config", str(path), "--no-api",
                             "--exit-when-done"], stdout=log, stderr=subprocess.STDOUT)
    return proc, tmp_path / "station.log"


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_sigterm_mid_pulse_leaves_the_reject_output_off_and_reports_pending_pulses(tmp_path, make_config):
    with plc_sim(tmp_path) as (port, edges):
        proc, log = start_station(tmp_path, make_config, port, pulse_ms=3000)
        assert wait_for(lambda: any(v for _, v in coil_edges(edges, 0)), 60), log.read_text()[-2000:]
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        time.sleep(0.05)
    assert coil_edges(edges, 0)[-1][1] == 0  # off, although the pulse had 3 s to go
    assert events(edges, "output")[-1]["values"] == [0]
    status = events(edges, "hr", 4)
    assert status[-1]["values"][1] == 0  # state register: stopped
    out = log.read_text()
    assert "station stopped (SIGTERM); reject output off" in out
    # the parts already decided whose pulse had not started yet are named
    assert "reject pulse(s) not fired: parts" in out or "not fired" not in out


def test_kill_9_mid_pulse_is_caught_by_the_plc_heartbeat_watchdog(tmp_path, make_config):
    with plc_sim(tmp_path, "--watchdog-ms", "300") as (port, edges):
        proc, log = start_station(tmp_path, make_config, port, pulse_ms=3000)
        assert wait_for(lambda: any(e["values"] == [1] for e in events(edges, "output")), 60), log.read_text()[-2000:]
        t_kill = time.monotonic_ns()
        proc.kill()
        proc.wait(10)
        assert wait_for(lambda: events(edges, "watchdog"), 3)  # the PLC stopped the line
    off = [e for e in events(edges, "output") if e["values"] == [0] and e["t_ns"] > t_kill]
    assert off and off[0]["why"] in ("heartbeat watchdog", "deadline passed")
    assert (off[0]["t_ns"] - t_kill) / 1e6 < 300 + 50 + 150  # watchdog + one heartbeat + scan slack


def test_with_plc_owned_pulses_the_station_never_drives_the_output_and_a_dead_station_cannot_hold_it(
        tmp_path, make_config):
    with plc_sim(tmp_path, "--plc-pulses", "--pulse-ms", "40") as (port, edges):
        proc, log = start_station(tmp_path, make_config, port, pulse_owner="plc")
        assert wait_for(lambda: len(pulses(edges, "output")) >= 3, 60), log.read_text()[-2000:]
        proc.kill()
        proc.wait(10)
        time.sleep(0.3)
    assert not [v for _, v in coil_edges(edges, 0) if v]  # the station never set the reject coil
    out = pulses(edges, "output")
    # the PLC owns the width: never cut short, and ended by its own clock (a stalled scan can only lengthen it)
    assert all(39 <= (off - on) / 1e6 < 140 for on, off in out)
    assert events(edges, "output")[-1]["values"] == [0]
    requests = events(edges, "hr", 6)  # reject requests: [sequence, PLC-clock target]
    assert len(requests) >= 3 and all(len(r["values"]) == 2 for r in requests)
