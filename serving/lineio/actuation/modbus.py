"""A PLC over Modbus TCP (pymodbus' synchronous client): result registers, handshake coils, reject coil.

>>> from serving.strict import describe_errors
>>> try:
...     ModbusConfig(hr_sequence=0, hr_verdict=5)
... except ValueError as exc:
...     print(describe_errors(exc, prefix="actuator.modbus"))
actuator.modbus.hr_verdict: hr_sequence (0) and hr_verdict (5) must be adjacent registers: they are written in one request
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from serving.lineio.actuation.base import ActuatorBackend
from serving.strict import StrictModel


class ModbusConfig(StrictModel):
    """Register map on the PLC (0-based Modbus addresses)."""

    host: str = "127.0.0.1"
    port: int = Field(5020, gt=0, lt=65536)
    device_id: int = Field(1, ge=0, le=255)
    timeout_s: float = Field(0.5, gt=0)
    hr_sequence: int = Field(0, ge=0, le=65535)
    hr_verdict: int = Field(1, ge=0, le=65535)
    hr_encoder: int = Field(10, ge=0, le=65535)
    coil_reject: int = Field(0, ge=0, le=65535)
    coil_result_ready: int = Field(1, ge=0, le=65535)
    coil_ack: int = Field(2, ge=0, le=65535)
    coil_stop_line: int = Field(3, ge=0, le=65535)

    @field_validator("hr_verdict")
    @classmethod
    def _adjacent(cls, v: int, info: ValidationInfo) -> int:
        seq = info.data.get("hr_sequence")
        if seq is not None and abs(seq - v) != 1:
            raise ValueError(f"hr_sequence ({seq}) and hr_verdict ({v}) must be adjacent registers: "
                             "they are written in one request")
        return v


class ModbusBackend(ActuatorBackend):
    """Writes results and reject edges to a PLC; reads its ack coil and encoder register."""

    kind = "modbus"

    def __init__(self, cfg: ModbusConfig) -> None:
        self.cfg = cfg
        self.client = None

    def connect(self) -> None:
        from pymodbus.client import ModbusTcpClient

        self.close()
        c = ModbusTcpClient(self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s, retries=0,
                            reconnect_delay=0)
        if not c.connect():
            raise ConnectionError(f"PLC at {self.cfg.host}:{self.cfg.port} unreachable")
        self.client = c

    def _check(self, rr, what: str):
        if rr.isError():
            raise ConnectionError(f"PLC refused {what}: {rr}")
        return rr

    def set_reject(self, on: bool) -> None:
        self._check(self.client.write_coil(self.cfg.coil_reject, on, device_id=self.cfg.device_id), "reject coil")

    def set_stop_line(self, on: bool) -> None:
        self._check(self.client.write_coil(self.cfg.coil_stop_line, on, device_id=self.cfg.device_id), "stop-line coil")

    def write_result(self, seq: int, code: int) -> None:
        c, d = self.cfg, self.cfg.device_id
        pair = [seq & 0xFFFF, code] if c.hr_sequence < c.hr_verdict else [code, seq & 0xFFFF]
        self._check(self.client.write_registers(min(c.hr_sequence, c.hr_verdict), pair, device_id=d), "result registers")
        self._check(self.client.write_coil(c.coil_result_ready, True, device_id=d), "result-ready coil")

    def take_ack(self) -> bool:
        c, d = self.cfg, self.cfg.device_id
        rr = self._check(self.client.read_coils(c.coil_ack, count=1, device_id=d), "ack coil")
        if rr.bits[0]:
            self._check(self.client.write_coil(c.coil_ack, False, device_id=d), "ack coil")
            self._check(self.client.write_coil(c.coil_result_ready, False, device_id=d), "result-ready coil")
            return True
        return False

    def read_encoder(self) -> int:
        rr = self._check(self.client.read_holding_registers(self.cfg.hr_encoder, count=1, device_id=self.cfg.device_id),
                         "encoder register")
        return int(rr.registers[0])

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
