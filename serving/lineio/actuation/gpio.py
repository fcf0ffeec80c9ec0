"""A reject output on a GPIO line: libgpiod (``gpiod``) or, on Jetson, ``Jetson.GPIO`` (import-guarded)."""

from __future__ import annotations

import logging

from pydantic import Field

from serving.lineio.actuation.base import ActuatorBackend
from serving.strict import StrictModel

log = logging.getLogger("lineguard.actuation")


class GpioConfig(StrictModel):
    """A reject output on a GPIO line (libgpiod or Jetson.GPIO)."""

    chip: str = "gpiochip0"
    line: int = Field(17, ge=0)
    active_high: bool = True


class GpioBackend(ActuatorBackend):
    """Drives one output line; has no result registers, handshake or encoder."""

    kind = "gpio"

    def __init__(self, cfg: GpioConfig) -> None:
        self.cfg = cfg
        self._set = None

    def connect(self) -> None:
        level = (lambda on: on) if self.cfg.active_high else (lambda on: not on)
        try:
            import gpiod  # libgpiod v2 Python bindings

            req = gpiod.request_lines(f"/dev/{self.cfg.chip}", consumer="lineguard", config={
                self.cfg.line: gpiod.LineSettings(direction=gpiod.line.Direction.OUTPUT)})
            self._set = lambda on: req.set_value(self.cfg.line, gpiod.line.Value.ACTIVE if level(on) else gpiod.line.Value.INACTIVE)
        except ImportError:
            try:
                import Jetson.GPIO as GPIO  # noqa: N814
            except ImportError:
                raise ConnectionError("GPIO actuator needs `pip install gpiod` (libgpiod) or Jetson.GPIO (JetPack)") from None
            GPIO.setmode(GPIO.BCM)
            GPIO.setup(self.cfg.line, GPIO.OUT, initial=GPIO.LOW if self.cfg.active_high else GPIO.HIGH)
            self._set = lambda on: GPIO.output(self.cfg.line, GPIO.HIGH if level(on) else GPIO.LOW)

    def set_reject(self, on: bool) -> None:
        self._set(on)

    def set_stop_line(self, on: bool) -> None:
        log.warning("stop-line %s requested; the GPIO actuator has no stop-line output", "ON" if on else "off")

    def close(self) -> None:
        if self._set is not None:
            self._set(False)  # leave the line in its safe state
