"""A PLC stand-in on Modbus TCP (pymodbus), for demos, tests and benchmarks.

It serves coils 0..15 and holding registers 0..31, timestamps every coil write with
``CLOCK_MONOTONIC`` (the same clock the station uses, so edges compare directly),
counts an encoder at 1 count/ms into holding register 10, acknowledges the station's
result-ready bit like a PLC program would, and can fire capture triggers.

    lineguard-station plc-sim --port 5020 --edges station-data/plc-edges.jsonl

>>> # each line of the edge log: {"t_ns": ..., "kind": "coil", "address": 0, "values": [1]}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time

N_COILS, N_HR = 16, 32


def build_device(on_write):
    """A SimDevice whose every client write calls ``on_write(kind, address, values, t_ns)``."""
    from pymodbus.simulator import DataType, SimData, SimDevice

    state = {"internal": False}

    async def action(fc, start_address, address, count, registers, set_values):
        # runs before the store is updated, for reads too (set_values None)
        if set_values is not None and not state["internal"]:
            on_write("coil" if fc in (5, 15) else "hr", address, [int(v) for v in set_values], time.monotonic_ns())
        return None

    device = SimDevice(
        id=0,  # answer every unit id
        simdata=(
            [SimData(0, count=N_COILS, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=N_HR, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )
    return device, state


async def serve(port: int, edges_path: str | None, auto_ack: bool, encoder_hr: int, ready_coil: int, ack_coil: int,
                trigger_coil: int, trigger_period_ms: float) -> None:
    """Run until SIGTERM/SIGINT."""
    from pymodbus.server import ModbusTcpServer

    out = open(edges_path, "a", buffering=1) if edges_path else None  # noqa: SIM115 - lives as long as the server
    pending_acks: list[int] = []

    def on_write(kind, address, values, t_ns):
        if out:
            out.write(json.dumps({"t_ns": t_ns, "kind": kind, "address": address, "values": values}) + "\n")
        if auto_ack and kind == "coil" and address == ready_coil and values and values[0]:
            pending_acks.append(t_ns)

    device, state = build_device(on_write)
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown()))
    await server.serve_forever(background=True)
    print(f"plc-sim listening on 127.0.0.1:{port}", flush=True)

    async def internal(fc, addr, values):
        state["internal"] = True
        try:
            await server.async_setValues(0, fc, addr, values)
        finally:
            state["internal"] = False

    async def ticker():
        t0 = time.monotonic_ns()
        next_trigger = time.monotonic() + trigger_period_ms / 1e3 if trigger_period_ms else None
        while True:
            await internal(6, encoder_hr, [((time.monotonic_ns() - t0) // 1_000_000) & 0xFFFF])
            while pending_acks:
                pending_acks.pop()
                await internal(5, ack_coil, [True])
            if next_trigger and time.monotonic() >= next_trigger:
                await internal(5, trigger_coil, [True])
                while next_trigger <= time.monotonic():  # one trigger per slot, no catch-up bursts
                    next_trigger += trigger_period_ms / 1e3
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    try:
        await server.serving
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if out:
            out.close()


def read_edges(path: str) -> list[dict]:
    """Parse an edge log written by the simulator."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """``lineguard-station plc-sim``."""
    p = argparse.ArgumentParser(prog="lineguard-station plc-sim", description="Modbus TCP PLC simulator")
    p.add_argument("--port", type=int, default=5020)
    p.add_argument("--edges", help="append every coil/register write here as JSON lines")
    p.add_argument("--no-ack", action="store_true", help="do not acknowledge result-ready (handshake tests)")
    p.add_argument("--encoder-hr", type=int, default=10)
    p.add_argument("--ready-coil", type=int, default=1)
    p.add_argument("--ack-coil", type=int, default=2)
    p.add_argument("--trigger-coil", type=int, default=4)
    p.add_argument("--trigger-period-ms", type=float, default=0.0, help="set the trigger coil this often (0 = never)")
    a = p.parse_args(argv)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(serve(a.port, a.edges, not a.no_ack, a.encoder_hr, a.ready_coil, a.ack_coil, a.trigger_coil,
                      a.trigger_period_ms))
    return 0
