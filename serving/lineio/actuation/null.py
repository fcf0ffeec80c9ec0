"""``actuator.kind: none``: logs what it would do (replay demos, benches without a PLC)."""

from __future__ import annotations

import logging

from serving.lineio.actuation.base import ActuatorBackend

log = logging.getLogger("lineguard.actuation")


class NullBackend(ActuatorBackend):
    """Logs only."""

    kind = "none"

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg

    def connect(self) -> None:
        pass

    def set_reject(self, on: bool) -> None:
        log.info("reject output %s", "ON" if on else "off")

    def set_stop_line(self, on: bool) -> None:
        log.warning("stop-line output %s", "ON" if on else "off")

    def write_result(self, seq: int, code: int) -> None:
        log.info("result seq=%d code=%d", seq, code)

    def take_ack(self) -> bool:
        return True

    def read_encoder(self) -> int:
        raise RuntimeError("no encoder on the 'none' actuator; use delay_mode: time")

    def close(self) -> None:
        pass
