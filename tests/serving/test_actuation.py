"""Actuation against a real pymodbus server (the project's PLC simulator) on 127.0.0.1."""

import subprocess
import sys
import time

import pytest

from serving.lineio.actuation.modbus import ModbusBackend
from serving.lineio.actuation.null import NullBackend
from serving.lineio.actuation.scheduler import Actuator
from serving.alarms import Alarms
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.actuation.modbus import ModbusConfig
from services import coil_edges, free_port, plc_sim, stop

pytestmark = pytest.mark.services


def actuator(port, **kw):
    cfg = ActuatorConfig(kind="modbus", modbus=ModbusConfig(port=port, timeout_s=0.3), **kw)
    alarms = Alarms()
    return Actuator(ModbusBackend(cfg.modbus), cfg, alarms).start(), alarms


def pulses(edges_path):
    """[(t_on, t_off)] from the reject coil's edges."""
    out, on = [], None
    for t, v in coil_edges(edges_path, 0):
        if v and on is None:
            on = t
        elif not v and on is not None:
            out.append((on, t))
            on = None
    return out


def test_pulses_only_for_fail_at_trigger_plus_delay_with_result_registers(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, alarms = actuator(port, delay_ms=60, pulse_ms=30)
        triggers = {}
        for seq, verdict in enumerate(["PASS", "FAIL", "PASS", "FAIL", "FAIL"], start=1):
            triggers[seq] = (time.monotonic_ns(), verdict)
            res = act.submit(seq, verdict, triggers[seq][0])
            assert res.scheduled == (verdict == "FAIL") and not res.late
            time.sleep(0.1)
        assert act.wait_idle(3)
        time.sleep(0.05)
        act.close()
        got = pulses(edges)
        fails = [t for t, v in triggers.values() if v == "FAIL"]
        assert len(got) == len(fails) == 3
        for (on, off), t_trig in zip(got, fails):
            # generous bounds: the precise error figures come from the benchmark, not a timed test
            assert abs((on - t_trig) / 1e6 - 60) < 20
            assert abs((off - on) / 1e6 - 30) < 20
        assert act.counts["results"] == 5 and act.counts["handshake_missed"] == 0
        assert not alarms.active()


def test_handshake_missed_when_the_plc_does_not_acknowledge(tmp_path):
    with plc_sim(tmp_path, "--no-ack") as (port, _):
        act, alarms = actuator(port)
        for seq in (1, 2, 3):
            act.submit(seq, "PASS", time.monotonic_ns())
            act.wait_idle(2)
        act.close()
        assert act.counts["handshake_missed"] == 2
        assert alarms.is_active("handshake")


def test_late_decision_is_counted_alarmed_and_stops_the_line(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, alarms = actuator(port, delay_ms=20, late_policy="stop_line")
        res = act.submit(7, "FAIL", time.monotonic_ns() - 200_000_000)  # trigger 200 ms ago
        assert res.late and not res.scheduled
        act.wait_idle(2)
        time.sleep(0.05)
        act.close()
        assert act.counts["late"] == 1 and alarms.is_active("late_decision")
        assert coil_edges(edges, 3) and coil_edges(edges, 3)[-1][1] == 1  # stop-line coil set
        assert pulses(edges) == []  # no reject pulse on a part that has already passed the ejector


def test_encoder_delay_counts_from_the_trigger(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, _ = actuator(port, delay_mode="encoder", delay_counts=80, pulse_ms=20)
        time.sleep(0.3)  # encoder history builds up (1 count per ms in the simulator)
        t_trig = time.monotonic_ns()
        res = act.submit(1, "FAIL", t_trig)
        assert res.scheduled and "encoder" in res.note
        time.sleep(0.4)
        act.close()
        (on, _), = pulses(edges)
        assert 60 < (on - t_trig) / 1e6 < 110  # 80 counts at 1 count/ms, plus Modbus polling slack


def test_unreachable_plc_alarms_and_never_blocks_inspection(tmp_path):
    port = free_port()  # nothing listens here
    act, alarms = actuator(port, retry_initial_s=0.05, retry_max_s=0.1)
    t = time.monotonic()
    for seq in range(1, 6):
        act.submit(seq, "FAIL", time.monotonic_ns())
    assert time.monotonic() - t < 0.05  # submit only queues
    time.sleep(0.6)
    assert alarms.is_active("plc") and act.counts["errors"] >= 1 and not act.connected
    act.close()


def test_null_backend_logs_only():
    cfg = ActuatorConfig(kind="none", delay_ms=10, pulse_ms=1)
    act = Actuator(NullBackend(), cfg, Alarms()).start()
    assert act.submit(1, "FAIL", time.monotonic_ns()).scheduled
    assert act.wait_idle(2)
    act.close()
    assert act.counts["pulses"] == 1


def test_overlapping_pulses_merge_instead_of_cutting_each_other_short(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, _ = actuator(port, delay_ms=50, pulse_ms=40)
        t = time.monotonic_ns()
        act.submit(1, "FAIL", t)
        act.submit(2, "FAIL", t + 15_000_000)  # second part 15 ms behind: pulses overlap
        time.sleep(0.3)
        act.close()
        (on, off), = pulses(edges)
        assert abs((off - on) / 1e6 - 55) < 15  # one pulse from the first start to the second end


def test_reconnect_drives_the_reject_output_off_before_anything_else(tmp_path):
    port = free_port()
    act, alarms = actuator(port, retry_initial_s=0.05, retry_max_s=0.1)
    act.submit(1, "PASS", time.monotonic_ns())
    time.sleep(0.3)
    assert alarms.is_active("plc")
    edges = tmp_path / "late.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "plc-sim", "--port", str(port), "--edges", str(edges)],
                            start_new_session=True)
    try:
        act.submit(2, "PASS", time.monotonic_ns())
        deadline = time.monotonic() + 10
        while alarms.is_active("plc") and time.monotonic() < deadline:
            time.sleep(0.05)
        act.wait_idle(2)
        assert not alarms.is_active("plc") and act.connected
        first = [e for e in edges.read_text().splitlines()][0]
        assert '"address": 0' in first and '"values": [0]' in first  # reject coil forced off first
    finally:
        act.close()
        stop(proc)
