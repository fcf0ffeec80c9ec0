"""Actuation: backends behind one interface, and the scheduler that times their writes."""

from serving.lineio.actuation.base import ActuatorBackend
from serving.lineio.actuation.config import ActuatorConfig
from serving.lineio.actuation.gpio import GpioBackend
from serving.lineio.actuation.modbus import ModbusBackend
from serving.lineio.actuation.null import NullBackend

#: ``actuator.kind`` -> backend class; each takes its own config section
BACKENDS: dict[str, type[ActuatorBackend]] = {b.kind: b for b in (ModbusBackend, GpioBackend, NullBackend)}


def make_backend(cfg: ActuatorConfig) -> ActuatorBackend:
    """The backend for ``actuator.kind``, built from its own config section."""
    cls = BACKENDS[cfg.kind]
    return cls(getattr(cfg, cfg.kind, None))


__all__ = ["BACKENDS", "ActuatorBackend", "ActuatorConfig", "make_backend"]
