"""Actuation: backends behind one interface, the I/O worker that times their writes, and the policy."""

from serving.lineio.actuation.base import ActuatorBackend
from serving.lineio.actuation.config import ActuatorConfig, ModbusConfig
from serving.lineio.actuation.gpio import GpioBackend
from serving.lineio.actuation.modbus import ModbusBackend
from serving.lineio.actuation.modbus_server import ModbusServerBackend
from serving.lineio.actuation.null import NullBackend


def make_backend(cfg: ActuatorConfig) -> ActuatorBackend:
    """The backend for ``actuator.kind`` (and ``modbus.mode``), built from its own config section."""
    if cfg.kind == "modbus":
        return ModbusServerBackend(cfg.modbus) if cfg.modbus.mode == "server" else ModbusBackend(cfg.modbus)
    if cfg.kind == "gpio":
        return GpioBackend(cfg.gpio)
    return NullBackend()


__all__ = ["ActuatorBackend", "ActuatorConfig", "ModbusConfig", "make_backend"]
