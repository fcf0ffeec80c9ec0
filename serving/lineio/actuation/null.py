"""``actuator.kind: none``: logs what it would do (replay demos, benches without a PLC)."""

from __future__ import annotations

import logging

from serving.lineio.actuation.base import ActuatorBackend

log = logging.getLogger("lineguard.actuation")


class NullBackend(ActuatorBackend):
    """Logs reject and stop-line edges; everything else is a no-op."""

    kind = "none"

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def set_reject(self, on: bool) -> None:
        log.debug("reject output %s", "ON" if on else "off")

    def set_stop_line(self, on: bool) -> None:
        log.warning("stop-line output %s (no actuator configured)", "ON" if on else "off")
