"""The PLC link's state and its duties between jobs: connecting, heartbeat, handshake, stop-line read-back.

Owned by the :class:`~serving.lineio.actuation.worker.IoWorker` and run on its thread only.

- connects with backoff, driving the reject output off first on every (re)connect;
- writes the heartbeat counter and the station-state register every ``heartbeat_ms``;
- polls the ack coil every ``ack_poll_ms`` while a result waits, clears result-ready and ack as soon
  as the PLC acknowledged, and raises the ``handshake`` alarm after ``ack_timeout_ms``;
- reads back a stop-line output it raised, and clears its alarm when the PLC reset it.

>>> link = Link(NullBackend(), ActuatorConfig(), Alarms(), lambda k: None, lambda: 1)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from serving.alarms import Alarms
from serving.lineio.actuation.base import ActuatorBackend
from serving.lineio.actuation.config import ActuatorConfig

log = logging.getLogger("lineguard.actuation")


class Link:
    """Connection state plus the periodic duties; :meth:`next_due_ns` says when they next want the thread."""

    def __init__(self, backend: ActuatorBackend, cfg: ActuatorConfig, alarms: Alarms, count: Callable[[str], None],
                 state: Callable[[], int]) -> None:
        self.backend, self.cfg, self.alarms, self.count, self.state = backend, cfg, alarms, count, state
        self.connected = False
        self.heartbeat = 0
        self.stop_line_latched = False
        self.ack_latency_ms: float | None = None
        self.awaiting: tuple[int, int] | None = None  # (seq, written at ns) of the unacknowledged result
        self._due = {"heartbeat": 0, "ack": 0, "stop_line": 0, "reconnect": 0}
        self._backoff = cfg.retry_initial_s
        self.tried = threading.Event()  # set once the first connection attempt has ended, either way

    @property
    def backoff_s(self) -> float:
        """The current reconnect delay."""
        return self._backoff

    def next_due_ns(self) -> int:
        """When the next duty is due (monotonic ns)."""
        return min(self._due.values())

    def ensure_connected(self) -> bool:
        """Connect if needed (reject output off first); False, with the alarm raised, when the PLC is not there."""
        if self.connected:
            return True
        try:
            self.backend.connect()
            self.backend.set_reject(False)  # a lost 'off' must not leave the ejector firing
        except Exception as exc:  # noqa: BLE001 - any transport failure means "not connected"
            self.alarms.raise_("plc", f"actuator {self.backend.kind}: {exc}; retrying with backoff")
            self._due["reconnect"] = time.monotonic_ns() + int(self._backoff * 1e9)
            self._backoff = min(self._backoff * 2, self.cfg.retry_max_s)
            self.tried.set()
            return False
        self.connected, self._backoff = True, self.cfg.retry_initial_s
        self.tried.set()
        self._due["reconnect"] = 2**62  # nothing to reconnect while connected
        self.alarms.clear("plc")
        return True

    def lost(self, what: str, exc: Exception) -> None:
        """A request failed: alarm, count, reconnect at the next chance."""
        self.connected = False
        self.count("errors")
        self.alarms.raise_("plc", f"actuator {self.backend.kind}: {what} failed: {exc}; reconnecting")
        self._due["reconnect"] = time.monotonic_ns()

    def result_written(self, seq: int) -> None:
        """A result went out: start watching for its ack (a result still unacknowledged is a missed handshake)."""
        if self.awaiting is not None:
            self.count("handshake_missed")
            self.alarms.raise_("handshake", f"PLC did not acknowledge part {self.awaiting[0]} before part {seq}'s "
                                            "result; check the PLC program's ack")
        self.awaiting = (seq, time.monotonic_ns()) if "ack" in self.backend.signals else None
        self._due["ack"] = time.monotonic_ns()

    def stop_line(self, on: bool, reason: str) -> None:
        """Drive the stop-line output and show it as an alarm while it is set."""
        self.backend.set_stop_line(on)
        self.stop_line_latched = on
        if on:
            self.alarms.raise_("stop_line", f"line stop requested ({reason}); reset it at the PLC or on the page")
        else:
            self.alarms.clear("stop_line")

    def duties(self) -> None:
        """Whatever is due now: reconnect, heartbeat, ack poll, stop-line read-back."""
        now = time.monotonic_ns()
        if not self.connected:
            if now >= self._due["reconnect"]:
                self.ensure_connected()
            later = max(self._due["heartbeat"], now + 20_000_000)
            self._due.update(heartbeat=later, ack=later, stop_line=later)
            return
        try:
            if now >= self._due["heartbeat"]:
                self._due["heartbeat"] = now + int(self.cfg.modbus.heartbeat_ms * 1e6)
                self.heartbeat = (self.heartbeat + 1) & 0xFFFF
                self.backend.write_status(self.heartbeat, self.state())
                problem = self.backend.link_error()
                self.alarms.raise_("plc", problem) if problem else self.alarms.clear("plc")
            if now >= self._due["ack"]:
                self._poll_ack(now)
            if now >= self._due["stop_line"]:
                self._due["stop_line"] = now + 250_000_000
                if self.stop_line_latched and self.backend.read_stop_line() is False:
                    self.stop_line_latched = False
                    self.alarms.clear("stop_line")
                    log.warning("stop-line output was reset at the PLC")
        except Exception as exc:  # noqa: BLE001 - a failed duty means the link is down
            self.lost("heartbeat/ack", exc)

    def _poll_ack(self, now: int) -> None:
        if self.awaiting is None:
            self._due["ack"] = now + 1_000_000_000
            return
        seq, since = self.awaiting
        self._due["ack"] = now + int(self.cfg.modbus.ack_poll_ms * 1e6)
        if self.backend.read_ack():
            self.backend.clear_handshake()
            self.ack_latency_ms = (time.monotonic_ns() - since) / 1e6
            self.awaiting = None
            self.count("acks")
            self.alarms.clear("handshake")
        elif (now - since) / 1e6 > self.cfg.modbus.ack_timeout_ms:
            self.alarms.raise_("handshake", f"PLC has not acknowledged part {seq}'s result for "
                                            f"{(now - since) / 1e6:.0f} ms (limit {self.cfg.modbus.ack_timeout_ms:g} ms)")
