"""The Modbus register map between station and PLC, as one validated model (0-based addresses).

In ``client`` mode (the default) the station is the Modbus client: it writes coils and holding
registers on the PLC. In ``server`` mode the PLC polls the station: what only the station writes
becomes discrete inputs and input registers, what the PLC writes stays coils and holding registers.
The README's register-map table is generated from :func:`register_table`.

>>> m = ModbusMap()
>>> m.result_block
(0, 4)
>>> from serving.strict import describe_errors
>>> try:
...     ModbusMap(coil_stop_line=0)
... except ValueError as exc:
...     print(describe_errors(exc))
coil_stop_line: coil 0 is used by both coil_reject and coil_stop_line; give each role its own coil
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from serving.strict import StrictModel, field_error

#: station state register values
STATE_STOPPED, STATE_RUNNING, STATE_ALARM, STATE_NOT_INSPECTING = 0, 1, 2, 3
#: verdict register values
VERDICT_NONE, VERDICT_PASS, VERDICT_FAIL, VERDICT_FAIL_SAFE = 0, 1, 2, 3


class ModbusMap(StrictModel):
    """Where each signal lives. ``None`` switches an optional signal off."""

    # written by the station: holding registers (client mode) / input registers (server mode)
    hr_sequence: int = Field(0, ge=0, le=65535, description="part sequence number, low 16 bits (wraps)")
    hr_verdict: int = Field(1, ge=0, le=65535, description="0 none yet, 1 PASS, 2 FAIL, 3 FAIL (inspection failed)")
    hr_sequence32: int = Field(2, ge=0, le=65534, description="part sequence number, 32 bits: high word, then low")
    hr_heartbeat: int | None = Field(4, ge=0, le=65535, description="+1 every heartbeat_ms (wraps at 65535)")
    hr_state: int | None = Field(5, ge=0, le=65535, description="0 stopped, 1 running, 2 running with an alarm, "
                                                                "3 not inspecting (camera or engine down)")
    hr_reject_cmd: int | None = Field(6, ge=0, le=65534, description="reject command: sequence low 16 bits, then "
                                                                     "PLC-clock deadline (station pulses) or target "
                                                                     "(PLC pulses)")
    # written by the PLC: holding registers
    # (each needs a line in the PLC program, so each is off until set; the PLC simulator has 10, 11 and 12)
    hr_encoder: int | None = Field(None, ge=0, le=65535, description="conveyor encoder count (16 bits, wraps)")
    hr_plc_clock: int | None = Field(None, ge=0, le=65535, description="PLC's free-running millisecond clock (16 bits)")
    hr_trigger_count: int | None = Field(None, ge=0, le=65533, description="trigger counter, then encoder and PLC "
                                                                           "clock at the trigger (3 registers)")
    # written by the station: coils (client mode) / discrete inputs (server mode)
    coil_reject: int = Field(0, ge=0, le=65535)
    coil_result_ready: int = Field(1, ge=0, le=65535)
    coil_stop_line: int | None = Field(3, ge=0, le=65535, description="set by the station; cleared by the PLC or on the page")
    # written by the PLC: coils
    coil_ack: int | None = Field(2, ge=0, le=65535, description="the PLC sets it on reading a result; the station clears it")
    coil_trigger: int = Field(4, ge=0, le=65535, description="trigger: the PLC sets it, the station resets it")

    @property
    def result_block(self) -> tuple[int, int]:
        """(first address, count) of the result registers, written in one request."""
        return min(self.hr_sequence, self.hr_verdict, self.hr_sequence32), 4

    def station_registers(self) -> dict[str, list[int]]:
        """Register roles the station writes -> addresses."""
        out = {"hr_sequence": [self.hr_sequence], "hr_verdict": [self.hr_verdict],
               "hr_sequence32": [self.hr_sequence32, self.hr_sequence32 + 1]}
        for name, width in (("hr_heartbeat", 1), ("hr_state", 1), ("hr_reject_cmd", 2)):
            a = getattr(self, name)
            if a is not None:
                out[name] = list(range(a, a + width))
        return out

    def plc_registers(self) -> dict[str, list[int]]:
        """Register roles the PLC writes -> addresses."""
        out = {}
        for name, width in (("hr_encoder", 1), ("hr_plc_clock", 1), ("hr_trigger_count", 3)):
            a = getattr(self, name)
            if a is not None:
                out[name] = list(range(a, a + width))
        return out

    def coils(self) -> dict[str, int]:
        """Coil roles -> addresses (both directions)."""
        return {n: getattr(self, n) for n in ("coil_reject", "coil_result_ready", "coil_stop_line", "coil_ack",
                                              "coil_trigger") if getattr(self, n) is not None}

    @model_validator(mode="after")
    def _no_overlaps(self) -> "ModbusMap":
        block = sorted([self.hr_sequence, self.hr_verdict, self.hr_sequence32, self.hr_sequence32 + 1])
        if block != list(range(block[0], block[0] + 4)):
            raise field_error("hr_sequence32", f"hr_sequence ({self.hr_sequence}), hr_verdict ({self.hr_verdict}) and "
                                                f"hr_sequence32 ({self.hr_sequence32}, {self.hr_sequence32 + 1}) must "
                                                "form one block of 4 adjacent registers: they are written in one request",
                               self.hr_sequence32)
        _check_unique({**self.station_registers(), **self.plc_registers()}, "register")
        plc = [a for addrs in self.plc_registers().values() for a in addrs]
        if plc and max(plc) - min(plc) >= 120:
            raise field_error("hr_trigger_count", f"the PLC's registers span {min(plc)}..{max(plc)}: keep them within "
                                                  "120 registers, they are read in one request", plc)
        _check_unique({k: [v] for k, v in self.coils().items()}, "coil")
        return self


def _check_unique(roles: dict[str, list[int]], what: str) -> None:
    seen: dict[int, str] = {}
    for name, addrs in roles.items():
        for a in addrs:
            if a in seen:
                raise field_error(name, f"{what} {a} is used by both {seen[a]} and {name}; give each role its own "
                                         f"{what}", a)
            seen[a] = name


def register_table(m: ModbusMap, mode: Literal["client", "server"] = "client") -> str:
    """The register map as a Markdown table (address 0-based and in Modicon form, type, direction, meaning)."""
    station_coil, station_reg = ("coil", "holding register") if mode == "client" else ("discrete input", "input register")
    prefix = {"coil": "0", "discrete input": "1", "input register": "3", "holding register": "4"}
    rows = []
    fields = type(m).model_fields
    for name, addrs in m.station_registers().items():
        rows.append((addrs, station_reg, "station → PLC", name, fields[name].description or ""))
    for name, addrs in m.plc_registers().items():
        rows.append((addrs, "holding register", "PLC → station", name, fields[name].description or ""))
    for name, a in m.coils().items():
        plc_writes = name in ("coil_ack", "coil_trigger")
        rows.append(([a], "coil" if plc_writes else station_coil, "PLC → station" if plc_writes else "station → PLC",
                     name, fields[name].description or {"coil_reject": "reject output (station-timed pulses)",
                                                        "coil_result_ready": "a new result is in the registers"}[name]))
    out = ["| address (0-based) | Modicon | type | direction | role | values |", "|---|---|---|---|---|---|"]
    for addrs, kind, direction, name, desc in rows:
        span = f"{addrs[0]}" + (f"–{addrs[-1]}" if len(addrs) > 1 else "")
        modicon = ", ".join(f"{prefix[kind]}{a + 1:04d}" for a in addrs)
        out.append(f"| {span} | {modicon} | {kind} | {direction} | `{name}` | {desc} |")
    return "\n".join(out)
