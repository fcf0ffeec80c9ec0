"""Settings of the actuator and the PLC link (the ``actuator:`` section of a station config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from serving.lineio.actuation.gpio import GpioConfig
from serving.lineio.actuation.modbus_map import ModbusMap
from serving.strict import StrictModel, field_error


class ModbusConfig(ModbusMap):
    """The PLC link: where it is, who polls whom, and its timing; the register map is inherited."""

    mode: Literal["client", "server"] = Field("client", description="client: the station writes to the PLC; "
                                                                    "server: the PLC polls the station")
    host: str = Field("127.0.0.1", description="client: the PLC's address; server: the address to listen on")
    port: int = Field(5020, gt=0, lt=65536)
    device_id: int = Field(1, ge=0, le=255, description="Modbus unit id (0-255; many TCP devices use 1 or 255)")
    timeout_s: float = Field(0.3, gt=0, le=5, description="per request; a frozen PLC is noticed this fast")
    heartbeat_ms: float = Field(100.0, ge=10, le=10_000, description="hr_heartbeat is incremented this often")
    ack_timeout_ms: float = Field(500.0, gt=0, description="a result not acknowledged within this raises an alarm")
    ack_poll_ms: float = Field(2.0, gt=0, le=100, description="how often the ack coil is read while a result waits")
    counter_poll_ms: float = Field(5.0, gt=0, le=100, description="how often encoder, PLC clock and trigger "
                                                                  "counter are read (a new trigger is seen this late)")


class ActuatorConfig(StrictModel):
    """How and when the reject output fires."""

    kind: Literal["modbus", "gpio", "none"] = "none"
    pulse_owner: Literal["station", "plc"] = Field("station", description="station: the station times the reject "
                                                   "coil; plc: the station writes a reject request, the PLC fires")
    delay_mode: Literal["time", "encoder"] = "time"
    delay_ms: float = Field(30.0, ge=0, description="time mode: pulse starts this long after the trigger")
    delay_counts: int = Field(0, ge=0, le=30_000, description="encoder mode: pulse starts this many counts after "
                                                              "the trigger (under half the 16-bit range)")
    max_delay_ms: float = Field(10_000.0, gt=0, description="refuse a longer delay_ms (a typo would hold pulses "
                                                            "for ever)")
    pulse_ms: float = Field(20.0, gt=0, le=5_000)
    min_pulse_ms: float | None = Field(None, gt=0, description="a pulse shorter than this is counted and alarmed "
                                                               "(default: 80 % of pulse_ms)")
    start_tolerance_ms: float = Field(5.0, gt=0, description="a reject edge later than this is counted and alarmed")
    max_edge_slip_ms: float = Field(20.0, gt=0, description="a reject edge later than this is dropped, not fired on "
                                                            "the next part")
    late_policy: Literal["stop_line", "reject_now", "alarm_only"] = "stop_line"
    reject_now_max_late_ms: float = Field(20.0, ge=0, description="reject_now only this late; later falls back to "
                                                                  "the stop-line")
    stop_line_on_exit: bool = Field(False, description="raise the stop-line output when the station stops")
    retry_initial_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    modbus: ModbusConfig = ModbusConfig()
    gpio: GpioConfig = GpioConfig()

    @property
    def min_width_ms(self) -> float:
        """The shortest pulse that still counts as good."""
        return self.min_pulse_ms if self.min_pulse_ms is not None else 0.8 * self.pulse_ms

    @model_validator(mode="after")
    def _consistent(self) -> "ActuatorConfig":
        m = self.modbus
        if self.delay_ms > self.max_delay_ms:
            raise field_error("delay_ms", f"delay_ms {self.delay_ms:g} is beyond max_delay_ms {self.max_delay_ms:g}: "
                                          "raise max_delay_ms if the line really is that long", self.delay_ms)
        if self.min_pulse_ms is not None and self.min_pulse_ms > self.pulse_ms:
            raise field_error("min_pulse_ms", f"min_pulse_ms {self.min_pulse_ms:g} exceeds pulse_ms {self.pulse_ms:g}",
                              self.min_pulse_ms)
        if self.pulse_owner == "plc":
            if self.kind != "modbus" or m.hr_reject_cmd is None:
                raise field_error("pulse_owner", "pulse_owner plc needs kind modbus and modbus.hr_reject_cmd "
                                                 "(where the reject request goes)", self.pulse_owner)
            if self.delay_mode == "time" and m.hr_plc_clock is None:
                raise field_error("pulse_owner", "pulse_owner plc in time mode needs modbus.hr_plc_clock (the target "
                                                 "is a PLC clock time)", self.pulse_owner)
        if self.delay_mode == "encoder" and (self.kind != "modbus" or m.hr_encoder is None):
            raise field_error("delay_mode", "delay_mode encoder needs kind modbus and modbus.hr_encoder", self.delay_mode)
        return self
