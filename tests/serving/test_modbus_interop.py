"""The station against Modbus stacks it was not written with: pyModbusTCP as the PLC, modbus-tk as a polling PLC
and as another vendor's device setting the trigger coil."""

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.alarms import Alarms
from serving.lineio.actuation import make_backend
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.actuation.modbus_server import shared_server
from serving.lineio.actuation.scheduler import Actuator
from serving.lineio.triggers import ModbusCoilTrigger, ServerCoilTrigger
from services import free_port, plc_sim, pulses, stop

pytestmark = pytest.mark.services
TOOLS = Path(__file__).resolve().parents[1] / "tools"


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_station_drives_a_pymodbustcp_plc_on_unit_255(tmp_path):
    port, log = free_port(), tmp_path / "pmt.jsonl"
    proc = subprocess.Popen([sys.executable, str(TOOLS / "pmt_plc.py"), str(port), str(log)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        cfg = ActuatorConfig(kind="modbus", delay_ms=60, pulse_ms=30, modbus={"port": port, "device_id": 255})
        alarms = Alarms()
        act = Actuator(make_backend(cfg), cfg, alarms).start()
        triggers = []
        for seq, verdict in enumerate(["FAIL", "PASS", "FAIL", "FAIL"], start=1):
            triggers.append((time.monotonic_ns(), verdict))
            act.submit(seq, verdict, triggers[-1][0])
            time.sleep(0.12)
        act.wait_idle(2)
        time.sleep(0.05)
        act.close()
    finally:
        stop(proc)
    events = read_log(log)
    assert {e["unit"] for e in events} == {255}
    on_off = pulses(log)
    fails = [t for t, v in triggers if v == "FAIL"]
    assert len(on_off) == 3
    for (on, off), t in zip(on_off, fails):
        assert abs((on - t) / 1e6 - 60) < 20 and abs((off - on) / 1e6 - 30) < 20
    blocks = [e["values"] for e in events if e["kind"] == "hr" and e["address"] == 0]
    assert [b[:2] for b in blocks] == [[1, 2], [2, 1], [3, 2], [4, 2]]
    assert act.counts["acks"] == 4 and not alarms.is_active("handshake")  # its ack was seen and cleared each time
    ready_clears = [e for e in events if e["kind"] == "coil" and e["address"] == 1 and e["values"] == [0]]
    assert len(ready_clears) >= 4


def test_a_modbus_tk_plc_polls_the_station_as_a_server(tmp_path):
    port, log = free_port(), tmp_path / "mtk.jsonl"
    cfg = ActuatorConfig(kind="modbus", pulse_owner="station", delay_ms=80, pulse_ms=30,
                         modbus={"mode": "server", "port": port, "heartbeat_ms": 50})
    alarms = Alarms()
    act = Actuator(make_backend(cfg), cfg, alarms).start()
    trigger = ServerCoilTrigger(shared_server(cfg.modbus), cfg.modbus.coil_trigger)
    plc = subprocess.Popen([sys.executable, str(TOOLS / "mtk_plc.py"), str(port), "3", "250", str(log)])
    got = []
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and (plc.poll() is None or not trigger.q.empty()):
            try:
                tick = trigger.q.get(timeout=0.5)
            except queue.Empty:
                continue
            got.append(tick.t_ns)
            act.submit(len(got), "FAIL" if len(got) % 2 else "PASS", tick.t_ns)
    finally:
        plc.wait(10)
        act.close()
    events = read_log(log)
    sent = [(e["before"], e["t_ns"]) for e in events if e["kind"] == "trigger"]
    results = [e for e in events if e["kind"] == "result"]
    assert len(sent) >= 8 and len(got) >= len(sent) - 1
    # the station timestamps a trigger when the PLC's write arrives: between the PLC's send and its reply
    assert all(before <= g <= after for (before, after), g in zip(sent, got)), [
        ((g - b) / 1e6, (a - b) / 1e6) for (b, a), g in zip(sent, got)]
    assert [r["verdict"] for r in results[:6]] == [2, 1, 2, 1, 2, 1]
    assert [r["seq32"] for r in results[:6]] == [1, 2, 3, 4, 5, 6]
    assert act.counts["acks"] >= len(results) - 1 and not alarms.is_active("plc")  # it polls: the link is up


def test_another_vendors_client_sets_the_trigger_coil_on_the_plc(tmp_path):
    import modbus_tk.defines as cst
    from modbus_tk import modbus_tcp

    with plc_sim(tmp_path) as (port, _):
        alarms = Alarms()

        def client():
            from pymodbus.client import ModbusTcpClient

            c = ModbusTcpClient("127.0.0.1", port=port, timeout=0.3, retries=0)
            c.connect()
            return c

        trig = ModbusCoilTrigger(client, coil=4, device_id=1, poll_ms=1, alarms=alarms)
        master = modbus_tcp.TcpMaster(host="127.0.0.1", port=port, timeout_in_sec=1.0)
        stop_evt = threading.Event()
        brackets = []
        for _ in range(10):
            sent = time.monotonic_ns()
            master.execute(1, cst.WRITE_SINGLE_COIL, 4, output_value=1)
            tick = trig.wait(stop_evt)
            brackets.append(((tick.t_ns - sent) / 1e6, (time.monotonic_ns() - tick.t_ns) / 1e6))
            time.sleep(0.05)
        master.close()
    # the edge is placed in the poll gap that saw it: never after the poll returned it, and before the write only by
    # half the freshness window (3 polls + 2 ms); bounds, not a latency, so a loaded CI machine cannot flake it
    assert len(brackets) == 10 and all(before > -2.5 and after >= 0 for before, after in brackets), brackets
