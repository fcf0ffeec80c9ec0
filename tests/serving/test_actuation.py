"""Actuation against the project's PLC simulator (a pymodbus server) on 127.0.0.1: timing, handshake, faults."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from serving.alarms import Alarms
from serving.lineio.actuation import make_backend
from serving.lineio.actuation.config import ActuatorConfig, ModbusConfig
from serving.lineio.actuation.null import NullBackend
from serving.lineio.actuation.scheduler import Actuator
from services import coil_edges, events, free_port, plc_sim, pulses, stop

pytestmark = pytest.mark.services
SIM_MAP = {"hr_encoder": 10, "hr_plc_clock": 11, "hr_trigger_count": 12}


def actuator(port, *, modbus=None, reports=None, **kw):
    cfg = ActuatorConfig(kind="modbus", modbus=ModbusConfig(port=port, timeout_s=0.3, **(modbus or {})), **kw)
    alarms = Alarms()
    on_pulse = reports.append if reports is not None else None
    return Actuator(make_backend(cfg), cfg, alarms, on_pulse=on_pulse).start(), alarms


def wait_for(cond, timeout=5.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def test_pulses_only_for_fail_at_trigger_plus_delay_with_the_full_result_block(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, alarms = actuator(port, delay_ms=60, pulse_ms=30)
        triggers = {}
        for seq, verdict in zip([1, 2, 3, 70_000, 70_001], ["PASS", "FAIL", "PASS", "FAIL", "FAIL"]):
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
            # never early (the PLC sees a write only after it is sent); width and lateness within a loaded
            # machine's slack: the precise error figures come from the benchmark, not a timed test
            assert 58 <= (on - t_trig) / 1e6 < 250 and 10 <= (off - on) / 1e6 < 250
        blocks = [e["values"] for e in events(edges, "hr", 0)]
        # 16-bit sequence (wraps), verdict, 32-bit sequence high word first
        assert blocks == [[1, 1, 0, 1], [2, 2, 0, 2], [3, 1, 0, 3], [70_000 & 0xFFFF, 2, 1, 70_000 & 0xFFFF],
                          [70_001 & 0xFFFF, 2, 1, 70_001 & 0xFFFF]]
        assert act.counts["results"] == 5 and act.counts["acks"] == 5 and act.counts["handshake_missed"] == 0
        assert not alarms.active()


def test_result_ready_and_ack_are_cleared_promptly_after_the_plc_acknowledges(tmp_path):
    with plc_sim(tmp_path, "--ack-delay-ms", "5") as (port, edges):
        act, _ = actuator(port, modbus={"ack_poll_ms": 2})
        for seq in range(1, 6):
            act.submit(seq, "PASS", time.monotonic_ns())
            time.sleep(0.06)
        act.close()
    ready = coil_edges(edges, 1)
    sets = [t for t, v in ready if v]
    clears = [t for t, v in ready if not v]
    assert len(sets) == 5 and len(clears) >= 5
    # each result-ready goes low after the PLC's ack and before the next part's result is raised: the order, not a
    # time bound, is what a loaded machine cannot change
    for t_set, t_next in zip(sets, [*sets[1:], None]):
        t_clear = min(t for t in clears if t > t_set)
        assert t_next is None or t_clear < t_next
        assert (t_clear - t_set) / 1e6 >= 4  # not before the PLC acknowledged (5 ms after it saw the result)
    assert [v for _, v in coil_edges(edges, 2) if v == 0]  # the ack coil is reset by the station too
    assert act.link.ack_latency_ms is not None and act.link.ack_latency_ms >= 4


def test_a_plc_that_never_acknowledges_raises_the_handshake_alarm_within_the_timeout(tmp_path):
    with plc_sim(tmp_path, "--no-ack") as (port, _):
        act, alarms = actuator(port, modbus={"ack_timeout_ms": 200})
        act.submit(1, "PASS", time.monotonic_ns())
        t0 = time.monotonic()
        assert wait_for(lambda: alarms.is_active("handshake"), 2)
        assert time.monotonic() - t0 < 0.5
        assert "not acknowledged part 1" in alarms.active()[0].message
        act.submit(2, "PASS", time.monotonic_ns())
        assert wait_for(lambda: act.counts["handshake_missed"] == 1, 2)
        act.close()


def test_heartbeat_and_state_registers_and_safe_state_on_close(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, _ = actuator(port, modbus={"heartbeat_ms": 50}, delay_ms=30, pulse_ms=500)
        time.sleep(0.6)
        act.submit(9, "FAIL", time.monotonic_ns())  # a long pulse: close() comes in the middle of it
        time.sleep(0.15)
        pending = act.close()
    beats = [e for e in events(edges, "hr", 4)]
    counts = [e["values"][0] for e in beats]
    assert len(beats) >= 8 and counts == sorted(counts)  # +1 every 50 ms
    gaps = [(b["t_ns"] - a["t_ns"]) / 1e6 for a, b in zip(beats, beats[1:-1])]
    assert 30 < sorted(gaps)[len(gaps) // 2] < 90
    assert [e["values"][1] for e in beats[:-1]] == [1] * (len(beats) - 1)  # running
    assert beats[-1]["values"][1] == 0  # stopped
    assert coil_edges(edges, 0)[-1][1] == 0  # the reject output ends off, mid-pulse
    assert pending == []  # the pulse had started: nothing was left unfired


def test_late_decision_stops_the_line_and_the_stop_line_is_reset_on_request(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, alarms = actuator(port, delay_ms=20, late_policy="stop_line")
        res = act.submit(7, "FAIL", time.monotonic_ns() - 200_000_000)  # trigger 200 ms ago
        assert res.late and not res.scheduled and "stop_line" in res.note
        assert wait_for(lambda: alarms.is_active("stop_line"))
        assert alarms.is_active("late_decision") and act.link.stop_line_latched
        assert coil_edges(edges, 3)[-1][1] == 1 and pulses(edges) == []  # no pulse on a part already gone
        act.reset_stop_line("test")
        assert wait_for(lambda: not alarms.is_active("stop_line"))
        assert coil_edges(edges, 3)[-1][1] == 0
        assert alarms.is_active("late_decision")  # an event: stays until an operator acknowledges it
        act.close()


def test_a_stop_line_cleared_at_the_plc_clears_the_alarm(tmp_path):
    with plc_sim(tmp_path, "--clear-stop-line-ms", "100") as (port, _):
        act, alarms = actuator(port, delay_ms=20)
        act.submit(1, "FAIL", time.monotonic_ns() - 100_000_000)
        assert wait_for(lambda: alarms.is_active("stop_line"))
        assert wait_for(lambda: not alarms.is_active("stop_line"), 3)  # read back every 250 ms
        act.close()


def test_reject_now_fires_a_slightly_late_pulse_as_late_and_stops_the_line_beyond_its_cap(tmp_path):
    with plc_sim(tmp_path) as (port, edges):
        act, alarms = actuator(port, delay_ms=20, pulse_ms=20, late_policy="reject_now", reject_now_max_late_ms=15)
        r1 = act.submit(1, "FAIL", time.monotonic_ns() - 25_000_000)  # 5 ms late: within the cap
        assert r1.scheduled and r1.late and "reject_now" in r1.note
        time.sleep(0.1)
        r2 = act.submit(2, "FAIL", time.monotonic_ns() - 120_000_000)  # 100 ms late: another part is there now
        assert not r2.scheduled and r2.late and "stop_line" in r2.note
        time.sleep(0.2)
        act.close()
    assert len(pulses(edges)) == 1 and coil_edges(edges, 3)[-1][1] == 1
    assert act.counts["late"] == 2


def test_encoder_delay_counts_from_the_trigger(tmp_path):
    """The target is the encoder at the trigger plus delay_counts, not at the (later) decision; never early.

    Checked in counts, which load cannot stretch: a decision 60 ms after the trigger would put a target counted
    from the decision 60 counts later. The time check is only the lower bound a loaded machine cannot break.
    """
    from pymodbus.client import ModbusTcpClient

    with plc_sim(tmp_path) as (port, edges):
        act, _ = actuator(port, modbus=SIM_MAP, delay_mode="encoder", delay_counts=150, pulse_ms=20)
        time.sleep(0.3)  # encoder history builds up (1 count per ms in the simulator)
        probe = ModbusTcpClient("127.0.0.1", port=port, timeout=0.3, retries=0)
        probe.connect()
        t0 = time.monotonic_ns()
        encoder_at_trigger = probe.read_holding_registers(SIM_MAP["hr_encoder"], count=1).registers[0]
        t_trig = (t0 + time.monotonic_ns()) // 2
        probe.close()
        time.sleep(0.06)  # the decision comes 60 ms after the trigger
        res = act.submit(1, "FAIL", t_trig)
        assert res.scheduled and res.note.startswith("at encoder ")
        target = int(res.note.removeprefix("at encoder "))
        assert abs(target - (encoder_at_trigger + 150)) <= 25, res.note
        time.sleep(0.5)
        act.close()
        (on, _), = pulses(edges)
        assert (on - t_trig) / 1e6 > 120  # 150 counts at 1 count/ms, less the trigger read's uncertainty


def test_unreachable_plc_alarms_and_never_blocks_inspection():
    port = free_port()  # nothing listens here
    act, alarms = actuator(port, retry_initial_s=0.05, retry_max_s=0.1)
    t = time.monotonic()
    for seq in range(1, 6):
        act.submit(seq, "FAIL", time.monotonic_ns())
    assert time.monotonic() - t < 0.05  # submit only queues
    assert wait_for(lambda: alarms.is_active("plc"), 2)
    assert "unreachable" in alarms.active()[0].message and not act.connected
    assert wait_for(lambda: act.counts["missed"] == 5, 2)  # each reject reported missed, none fired late
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
        # one on write: the second pulse joins the first (each pulse writing its own edges would write on twice, and
        # the first one's off would cut the second short)
        assert [v for _, v in coil_edges(edges, 0)].count(1) == 1
        assert (off - on) / 1e6 > 40  # it lasts past the first pulse's own 40 ms (55 ms when nothing stalls)


def test_reconnect_drives_the_reject_output_off_before_anything_else(tmp_path):
    port = free_port()
    act, alarms = actuator(port, retry_initial_s=0.05, retry_max_s=0.1)
    act.submit(1, "PASS", time.monotonic_ns())
    assert wait_for(lambda: alarms.is_active("plc"), 2)
    edges = tmp_path / "late.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "plc-sim", "--port", str(port), "--edges", str(edges)],
                            start_new_session=True)
    try:
        assert wait_for(lambda: not alarms.is_active("plc"), 10)
        act.submit(2, "PASS", time.monotonic_ns())
        act.wait_idle(2)
        assert act.connected
        first = events(edges, "coil")[0]
        assert first["address"] == 0 and first["values"] == [0]  # reject coil forced off first
    finally:
        act.close()
        stop(proc)


def test_every_pulse_is_checked_late_and_short_pulses_are_counted_alarmed_and_reported(tmp_path):
    with plc_sim(tmp_path) as (port, _):
        reports = []
        act, alarms = actuator(port, delay_ms=40, pulse_ms=20, start_tolerance_ms=5, reports=reports)
        real = act.backend.set_reject

        def slow_on(on):  # the link (or the station) stalls 15 ms on this one edge
            if on:
                time.sleep(0.015)
            real(on)

        act.submit(1, "FAIL", time.monotonic_ns())
        assert wait_for(lambda: len(reports) == 1)
        act.backend.set_reject = slow_on
        act.submit(2, "FAIL", time.monotonic_ns())
        assert wait_for(lambda: len(reports) == 2)
        act.close()
    bad = reports[1]  # the undisturbed first pulse is not judged here: on a loaded machine it may start late too
    # the stalled one starts ~15 ms late (less the write's lead) and its OFF keeps its time: ~5 of its 20 ms
    assert bad.late and bad.short and bad.start_error_ms > 12 and bad.width_ms < 16
    assert act.counts["pulse_late"] == sum(r.late for r in reports)
    assert act.counts["pulse_short"] == sum(r.short for r in reports)
    assert alarms.is_active("pulse_late") and alarms.is_active("pulse_short")
    assert "part 2" in next(a.message for a in alarms.active() if a.name == "pulse_late")


def test_a_reject_write_held_up_by_a_frozen_plc_is_not_acted_on_when_it_finally_arrives(tmp_path):
    """The PLC freezes just as the reject edge is written; the write is delivered ~400 ms late.

    The station writes a deadline on the PLC's own clock before each edge, so the PLC program
    (here the simulator's) keeps the physical output off; the station counts the pulse as missed.
    """
    with plc_sim(tmp_path, capture_proc=True) as (port, edges, proc):
        reports = []
        act, alarms = actuator(port, modbus=SIM_MAP, delay_ms=60, pulse_ms=30, reports=reports)
        time.sleep(0.3)  # the PLC clock's history builds up
        real = act.backend.set_reject

        def freeze_on(on):
            if on:
                os.kill(proc.pid, signal.SIGSTOP)
                threading.Timer(0.4, os.kill, (proc.pid, signal.SIGCONT)).start()
                time.sleep(0.05)  # SIGSTOP is asynchronous
            real(on)

        act.backend.set_reject = freeze_on
        t = time.monotonic_ns()
        act.submit(1, "FAIL", t)
        assert wait_for(lambda: reports and reports[0].missed, 3)
        time.sleep(0.3)
        act.backend.set_reject = real
        act.close()
    late_on = [tt for tt, v in coil_edges(edges, 0) if v]
    assert late_on and (late_on[0] - t) / 1e6 > 300  # the write did arrive, very late ...
    assert not [e for e in events(edges, "output") if e["values"] == [1]]  # ... and the output never fired
    assert alarms.is_active("pulse_missed")


def test_the_first_part_s_result_is_not_lost_behind_a_slow_first_connect(tmp_path):
    """start() returns once the first connection attempt has ended: a result queued behind a slow connect would be
    superseded by the next part's (results are never written late), and the PLC would miss the first part."""
    from serving.lineio.actuation.modbus import ModbusBackend

    class SlowFirstConnect(ModbusBackend):  # a real Modbus client whose first connect takes 150 ms (ARP, a busy PLC)
        def connect(self) -> None:
            time.sleep(0.15)
            super().connect()

    with plc_sim(tmp_path) as (port, edges):
        cfg = ActuatorConfig(kind="modbus", modbus=ModbusConfig(port=port, timeout_s=0.3), delay_ms=60, pulse_ms=20)
        act = Actuator(SlowFirstConnect(cfg.modbus), cfg, Alarms()).start()
        act.submit(1, "PASS", time.monotonic_ns())
        time.sleep(0.05)  # the next part comes before a 150 ms connect would have ended
        act.submit(2, "PASS", time.monotonic_ns())
        assert act.wait_idle(3)
        time.sleep(0.05)
        act.close()
    assert [b[0] for b in (e["values"] for e in events(edges, "hr", 0))] == [1, 2]
    assert act.counts["errors"] == 0
