"""Settings of the actuator (the ``actuator:`` section of a station config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serving.lineio.actuation.gpio import GpioConfig
from serving.lineio.actuation.modbus import ModbusConfig
from serving.strict import StrictModel


class ActuatorConfig(StrictModel):
    """How and when the reject output fires."""

    kind: Literal["modbus", "gpio", "none"] = "none"
    delay_mode: Literal["time", "encoder"] = "time"
    delay_ms: float = Field(30.0, ge=0, description="time mode: pulse starts this long after the trigger")
    delay_counts: int = Field(0, ge=0, description="encoder mode: pulse starts this many counts after the trigger")
    pulse_ms: float = Field(20.0, gt=0)
    late_policy: Literal["stop_line", "reject_now", "alarm_only"] = "stop_line"
    retry_initial_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    modbus: ModbusConfig = ModbusConfig()
    gpio: GpioConfig = GpioConfig()
