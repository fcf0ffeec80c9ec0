"""A PLC stand-in on Modbus TCP, for demos, tests and benchmarks: the PLC program a controls engineer would write.

It serves coils and holding registers, timestamps every write a client makes with
``CLOCK_MONOTONIC`` (the clock the station uses, so edges compare directly), and runs a 1 ms scan:

- a free-running millisecond clock in HR 11 and an encoder in HR 10 (``--encoder-per-ms`` counts/ms);
- acknowledges the station's result-ready coil (``--no-ack`` never does, ``--ack-delay-ms`` waits);
- triggers parts every ``--trigger-period-ms``: sets coil 4, and counts them in HR 12 with the encoder
  and clock at the trigger in HR 13 and 14 (the ground-truth trigger time goes to the log);
- drives the physical reject output from coil 0, honouring the deadline in the reject command
  (HR 7, PLC clock) when the station writes one; ``--plc-pulses`` fires the output itself at the
  target of each FAIL's reject request instead (``pulse_owner: plc``);
- a heartbeat watchdog (``--watchdog-ms``): HR 4 unchanged that long forces the output off and sets
  the stop-line coil 3 -- the logic the README asks of a real PLC;
- ``--clear-stop-line-ms`` clears the stop-line coil after that long (an operator's reset at the PLC).

    lineguard-station plc-sim --port 5020 --edges station-data/plc-edges.jsonl

>>> # each line of the edge log: {"t_ns": ..., "kind": "coil", "address": 0, "values": [1]}
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time

from serving.lineio.modbus_server import FC_COILS, FC_HOLDING, ModbusServerThread

REJECT, READY, ACK, STOP_LINE, TRIGGER = 0, 1, 2, 3, 4
HR_SEQ, HR_VERDICT, HR_HEARTBEAT, HR_CMD = 0, 1, 4, 6
HR_ENCODER, HR_CLOCK, HR_TRIGGERS = 10, 11, 12


class PlcSim:
    """The simulated PLC program; :meth:`scan` runs once a millisecond."""

    def __init__(self, port: int, edges_path: str | None, args: argparse.Namespace) -> None:
        self.a = args
        self.out = open(edges_path, "a", buffering=1) if edges_path else None  # noqa: SIM115 - lives with the sim
        self._log_lock = threading.Lock()
        self.srv = ModbusServerThread("127.0.0.1", port, self._on_write, scan=self.scan)
        self.t0 = time.monotonic_ns()
        self.output = False  # the physical reject output
        self.ready_seen_ns: int | None = None
        self.last_hb: tuple[int, int] | None = None  # (value, since ns)
        self.tripped = False
        self.plc_pulses: list[tuple[str, int, int]] = []  # (unit, target, seq) waiting to fire
        self.pulse_off_ns: int | None = None
        self.stop_set_ns: int | None = None
        self.triggers = 0
        self.next_trigger = (time.monotonic() + args.trigger_period_ms / 1e3) if args.trigger_period_ms else None

    def log(self, **event) -> None:
        """Append one event to the edge log."""
        if self.out:
            with self._log_lock:
                self.out.write(json.dumps(event) + "\n")

    def _on_write(self, table: int, address: int, values: list[int], t_ns: int) -> None:
        self.log(t_ns=t_ns, kind="coil" if table == FC_COILS else "hr", address=address, values=values)

    def now_ms(self) -> int:
        """The PLC's millisecond clock (and encoder time base)."""
        return (time.monotonic_ns() - self.t0) // 1_000_000

    def _set_output(self, on: bool, why: str) -> None:
        if on != self.output:
            self.output = on
            self.log(t_ns=time.monotonic_ns(), kind="output", address=REJECT, values=[int(on)], why=why)

    async def scan(self) -> None:
        """One PLC scan (in the server's event loop, every millisecond)."""
        now_ns, ms, a = time.monotonic_ns(), self.now_ms(), self.a
        encoder = (ms * a.encoder_per_ms) & 0xFFFF
        await self.srv.aset(FC_HOLDING, HR_ENCODER, [encoder, ms & 0xFFFF])
        coils = await self.srv.aget(FC_COILS, 0, 5)
        regs = await self.srv.aget(FC_HOLDING, 0, 8)
        await self._handshake(coils, regs, now_ns, ms, encoder)
        await self._reject_output(coils, regs, now_ns, ms, encoder)
        await self._watchdog(regs[HR_HEARTBEAT], now_ns)
        if coils[STOP_LINE] and a.clear_stop_line_ms:
            self.stop_set_ns = self.stop_set_ns or now_ns
            if now_ns - self.stop_set_ns > a.clear_stop_line_ms * 1e6:
                await self.srv.aset(FC_COILS, STOP_LINE, [False])
                self.log(t_ns=now_ns, kind="stop_line_cleared_by_plc", address=STOP_LINE, values=[0])
                self.stop_set_ns = None
        if self.next_trigger and time.monotonic() >= self.next_trigger:
            self.triggers += 1
            await self.srv.aset(FC_COILS, TRIGGER, [True])
            await self.srv.aset(FC_HOLDING, HR_TRIGGERS, [self.triggers & 0xFFFF, encoder, ms & 0xFFFF])
            self.log(t_ns=now_ns, kind="plc_trigger", address=TRIGGER, values=[self.triggers])
            while self.next_trigger <= time.monotonic():  # one trigger per slot, no catch-up bursts
                self.next_trigger += a.trigger_period_ms / 1e3

    async def _handshake(self, coils, regs, now_ns, ms, encoder) -> None:
        if not coils[READY]:
            self.ready_seen_ns = None
            return
        if self.ready_seen_ns is None:
            self.ready_seen_ns = now_ns
            if self.a.plc_pulses and regs[HR_VERDICT] in (2, 3):  # a FAIL's reject request: the PLC fires itself
                unit = "encoder" if self.a.plc_pulse_unit == "encoder" else "clock"
                if regs[HR_CMD] == regs[HR_SEQ]:  # only a request for this very part
                    self.plc_pulses.append((unit, regs[HR_CMD + 1], regs[HR_CMD]))
                else:
                    self.log(t_ns=now_ns, kind="no_reject_request", address=HR_CMD, values=[regs[HR_SEQ]])
        if not self.a.no_ack and not coils[ACK] and now_ns - self.ready_seen_ns >= self.a.ack_delay_ms * 1e6:
            await self.srv.aset(FC_COILS, ACK, [True])

    async def _reject_output(self, coils, regs, now_ns, ms, encoder) -> None:
        if self.a.plc_pulses:
            for item in list(self.plc_pulses):
                unit, target, seq = item
                current = encoder if unit == "encoder" else ms & 0xFFFF
                if ((current - target) & 0xFFFF) < 0x8000:  # reached (16-bit modular)
                    self.plc_pulses.remove(item)
                    self.pulse_off_ns = now_ns + int(self.a.pulse_ms * 1e6)
                    self._set_output(True, f"plc pulse for part {seq}")
            if self.pulse_off_ns is not None and now_ns >= self.pulse_off_ns:
                self.pulse_off_ns = None
                self._set_output(False, "plc pulse end")
            return
        # station-timed: the coil drives the output, unless the reject command's deadline (PLC clock) passed
        deadline_ok = True
        if regs[HR_CMD + 1] or regs[HR_CMD]:
            deadline_ok = ((regs[HR_CMD + 1] - ms) & 0xFFFF) < 0x8000
        self._set_output(bool(coils[REJECT]) and deadline_ok, "coil" if deadline_ok else "deadline passed")

    async def _watchdog(self, heartbeat: int, now_ns: int) -> None:
        if not self.a.watchdog_ms:
            return
        if self.last_hb is None or self.last_hb[0] != heartbeat:
            self.last_hb, self.tripped = (heartbeat, now_ns), False
        elif now_ns - self.last_hb[1] > self.a.watchdog_ms * 1e6 and heartbeat and not self.tripped:
            self.tripped = True  # the station is gone: output off, line stopped, until the heartbeat moves again
            await self.srv.aset(FC_COILS, REJECT, [False])
            self._set_output(False, "heartbeat watchdog")
            await self.srv.aset(FC_COILS, STOP_LINE, [True])
            self.log(t_ns=now_ns, kind="watchdog", address=HR_HEARTBEAT, values=[heartbeat])

    def run(self, stop: threading.Event) -> None:
        """Serve and scan until ``stop``."""
        self.srv.start()
        print(f"plc-sim listening on 127.0.0.1:{self.srv.port}", flush=True)
        stop.wait()
        self.srv.stop()
        if self.out:
            self.out.close()


def read_edges(path: str) -> list[dict]:
    """Parse an edge log written by the simulator."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """``lineguard-station plc-sim``."""
    p = argparse.ArgumentParser(prog="lineguard-station plc-sim", description="Modbus TCP PLC simulator")
    p.add_argument("--port", type=int, default=5020)
    p.add_argument("--edges", help="append every write and output edge here as JSON lines")
    p.add_argument("--no-ack", action="store_true", help="never acknowledge result-ready (handshake tests)")
    p.add_argument("--ack-delay-ms", type=float, default=0.0)
    p.add_argument("--encoder-per-ms", type=int, default=1)
    p.add_argument("--trigger-period-ms", type=float, default=0.0, help="trigger a part this often (0 = never)")
    p.add_argument("--plc-pulses", action="store_true", help="fire the reject output itself (pulse_owner: plc)")
    p.add_argument("--plc-pulse-unit", choices=["clock", "encoder"], default="clock")
    p.add_argument("--pulse-ms", type=float, default=30.0)
    p.add_argument("--watchdog-ms", type=float, default=0.0, help="heartbeat watchdog (0 = off)")
    p.add_argument("--clear-stop-line-ms", type=float, default=0.0, help="clear the stop-line after this (0 = never)")
    a = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    PlcSim(a.port, a.edges, a).run(stop)
    return 0
