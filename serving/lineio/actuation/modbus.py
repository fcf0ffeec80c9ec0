"""The PLC as a Modbus TCP server, the station as its client (pymodbus' synchronous client).

Every request is checked (pymodbus *returns* exception replies rather than raising them) and
any transport error becomes ``ConnectionError``, so the worker sees one kind of failure.

>>> ModbusBackend(ModbusConfig()).kind
'modbus'
"""

from __future__ import annotations

from serving.lineio.actuation.base import ActuatorBackend, Counters
from serving.lineio.actuation.config import ModbusConfig


def result_words(seq: int, code: int) -> dict[int, int]:
    """Register offset -> value for one result (16-bit sequence, verdict, 32-bit sequence high word first)."""
    return {0: seq & 0xFFFF, 1: code, 2: (seq >> 16) & 0xFFFF, 3: seq & 0xFFFF}


class ModbusBackend(ActuatorBackend):
    """Writes results, heartbeat and reject edges to a PLC; reads its ack coil, counters and stop-line."""

    kind = "modbus"
    signals = frozenset({"result", "ack", "heartbeat", "stop_line", "counters", "reject_cmd"})

    def __init__(self, cfg: ModbusConfig) -> None:
        self.cfg = cfg
        self.client = None

    def connect(self) -> None:
        from pymodbus.client import ModbusTcpClient

        self.close()
        c = ModbusTcpClient(self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s, retries=0,
                            reconnect_delay=0)
        if not c.connect():
            raise ConnectionError(f"PLC at {self.cfg.host}:{self.cfg.port} unreachable (connection refused or no route)")
        self.client = c

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _call(self, what: str, fn, *args, **kw):
        if self.client is None:
            raise ConnectionError("not connected")
        try:
            rr = fn(*args, device_id=self.cfg.device_id, **kw)
        except Exception as exc:  # noqa: BLE001 - pymodbus raises its own exceptions and raw OSErrors
            raise ConnectionError(f"{what}: {type(exc).__name__}: {exc}") from None
        if rr is None or rr.isError():
            raise ConnectionError(f"PLC refused {what}: {rr}")
        return rr

    def _coil(self, address: int, on: bool, what: str) -> None:
        self._call(what, self.client.write_coil, address, bool(on))

    def set_reject(self, on: bool) -> None:
        self._coil(self.cfg.coil_reject, on, "reject coil")

    def set_stop_line(self, on: bool) -> None:
        if self.cfg.coil_stop_line is not None:
            self._coil(self.cfg.coil_stop_line, on, "stop-line coil")

    def read_stop_line(self) -> bool | None:
        if self.cfg.coil_stop_line is None:
            return None
        return bool(self._call("stop-line coil", self.client.read_coils, self.cfg.coil_stop_line, count=1).bits[0])

    def write_result(self, seq: int, code: int, reject_cmd: tuple[int, int] | None = None) -> None:
        c = self.cfg
        first, _ = c.result_block
        words = result_words(seq, code)
        offsets = {c.hr_sequence: 0, c.hr_verdict: 1, c.hr_sequence32: 2, c.hr_sequence32 + 1: 3}
        block = [words[offsets[a]] for a in range(first, first + 4)]
        if reject_cmd is not None:
            self.write_reject_cmd(*reject_cmd)
        self._call("result registers", self.client.write_registers, first, block)
        self._coil(c.coil_result_ready, True, "result-ready coil")

    def read_ack(self) -> bool:
        if self.cfg.coil_ack is None:
            return True
        return bool(self._call("ack coil", self.client.read_coils, self.cfg.coil_ack, count=1).bits[0])

    def clear_handshake(self) -> None:
        self._coil(self.cfg.coil_result_ready, False, "result-ready coil")
        if self.cfg.coil_ack is not None:
            self._coil(self.cfg.coil_ack, False, "ack coil")

    def write_status(self, heartbeat: int, state: int) -> None:
        c = self.cfg
        if c.hr_heartbeat is not None and c.hr_state == c.hr_heartbeat + 1:
            self._call("heartbeat registers", self.client.write_registers, c.hr_heartbeat, [heartbeat & 0xFFFF, state])
            return
        if c.hr_heartbeat is not None:
            self._call("heartbeat register", self.client.write_register, c.hr_heartbeat, heartbeat & 0xFFFF)
        if c.hr_state is not None:
            self._call("state register", self.client.write_register, c.hr_state, state)

    def write_reject_cmd(self, seq: int, value: int) -> None:
        if self.cfg.hr_reject_cmd is not None:
            self._call("reject command registers", self.client.write_registers, self.cfg.hr_reject_cmd,
                       [seq & 0xFFFF, value & 0xFFFF])

    def read_counters(self) -> Counters:
        c = self.cfg
        want = {n: a for n, a in (("encoder", c.hr_encoder), ("clock", c.hr_plc_clock),
                                  ("trigger_count", c.hr_trigger_count)) if a is not None}
        if not want:
            raise RuntimeError("no PLC counters configured (modbus.hr_encoder / hr_plc_clock / hr_trigger_count)")
        span = [a for a in want.values()] + ([c.hr_trigger_count + 2] if c.hr_trigger_count is not None else [])
        lo, hi = min(span), max(span)
        regs = self._call("PLC counter registers", self.client.read_holding_registers, lo, count=hi - lo + 1).registers
        get = lambda a: None if a is None else int(regs[a - lo])  # noqa: E731
        t = c.hr_trigger_count
        return Counters(encoder=get(c.hr_encoder), clock=get(c.hr_plc_clock), trigger_count=get(t),
                        trigger_encoder=get(t + 1) if t is not None else None,
                        trigger_clock=get(t + 2) if t is not None else None)
