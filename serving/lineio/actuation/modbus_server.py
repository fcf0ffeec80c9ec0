"""The station as a Modbus TCP server: the PLC polls it (``modbus.mode: server``).

What only the station writes reads naturally to a PLC here: reject, result-ready and stop-line
are *discrete inputs*, the result block, heartbeat, state and reject request are *input
registers*; the PLC writes the ack and trigger *coils* and its counters into *holding registers*.
The PLC's own poll decides when it sees a change: station-timed pulses reach it up to one poll
period late, so ``pulse_owner: plc`` (the PLC fires at its own encoder or clock target) is the
precise choice here. Writing its own tables never fails; whether the PLC is really polling is
reported by :meth:`ModbusServerBackend.link_error` and shown as the ``plc`` alarm.

>>> backend = ModbusServerBackend(ModbusConfig(mode="server", port=0))   # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time

from serving.lineio.actuation.base import ActuatorBackend, Counters
from serving.lineio.actuation.config import ModbusConfig
from serving.lineio.actuation.modbus import result_words
from serving.lineio.modbus_server import FC_COILS, FC_DISCRETE, FC_HOLDING, FC_INPUT, ModbusServerThread

_servers: dict[tuple[str, int], ModbusServerThread] = {}
_servers_lock = threading.Lock()


def shared_server(cfg: ModbusConfig) -> ModbusServerThread:
    """One server per address in a process: the actuator, its counter poll and a Modbus trigger share it."""
    key = (cfg.host, cfg.port)
    with _servers_lock:
        srv = _servers.get(key)
        if srv is None or not srv.alive:
            listeners: list = []

            def on_write(table, address, values, t_ns):
                for listener in list(listeners):
                    listener(table, address, values, t_ns)

            srv = _servers[key] = ModbusServerThread(cfg.host, cfg.port, on_write, size=256)
            srv.listeners = listeners
            srv.start()
    return srv


class ModbusServerBackend(ActuatorBackend):
    """Publishes the station's signals in its own server's tables; reads what the PLC wrote there."""

    kind = "modbus"
    signals = frozenset({"result", "ack", "heartbeat", "stop_line", "counters", "reject_cmd"})

    def __init__(self, cfg: ModbusConfig, stale_after_s: float = 2.0) -> None:
        self.cfg, self.stale_after_s = cfg, stale_after_s
        self.server: ModbusServerThread | None = None

    def connect(self) -> None:
        self.server = shared_server(self.cfg)

    def link_error(self) -> str | None:
        # a server that nobody reads rejects nothing: say so while the PLC is not polling
        limit = max(self.stale_after_s, 3 * self.cfg.heartbeat_ms / 1e3)
        idle = (time.monotonic_ns() - self.server.last_request_ns) / 1e9 if self.server else float("inf")
        if idle > limit:
            return (f"the PLC has not polled the station's Modbus server on {self.cfg.host}:{self.cfg.port} "
                    f"for more than {limit:g} s: nothing the station writes reaches it")
        return None

    def close(self) -> None:
        if self.server is not None:
            self.server.set(FC_DISCRETE, self.cfg.coil_reject, [False])

    def set_reject(self, on: bool) -> None:
        self.server.set(FC_DISCRETE, self.cfg.coil_reject, [bool(on)])

    def set_stop_line(self, on: bool) -> None:
        if self.cfg.coil_stop_line is not None:
            self.server.set(FC_DISCRETE, self.cfg.coil_stop_line, [bool(on)])

    def read_stop_line(self) -> bool | None:
        # the PLC cannot write a discrete input: it asks for a reset by setting the same address as a coil
        if self.cfg.coil_stop_line is None:
            return None
        if self.server.get(FC_COILS, self.cfg.coil_stop_line)[0]:
            self.server.set(FC_COILS, self.cfg.coil_stop_line, [False])
            self.server.set(FC_DISCRETE, self.cfg.coil_stop_line, [False])
        return bool(self.server.get(FC_DISCRETE, self.cfg.coil_stop_line)[0])

    def write_result(self, seq: int, code: int, reject_cmd: tuple[int, int] | None = None) -> None:
        c = self.cfg
        words = result_words(seq, code)
        for addr, off in ((c.hr_sequence, 0), (c.hr_verdict, 1), (c.hr_sequence32, 2), (c.hr_sequence32 + 1, 3)):
            self.server.set(FC_INPUT, addr, [words[off]])
        if reject_cmd is not None:
            self.write_reject_cmd(*reject_cmd)
        self.server.set(FC_DISCRETE, c.coil_result_ready, [True])

    def read_ack(self) -> bool:
        return True if self.cfg.coil_ack is None else bool(self.server.get(FC_COILS, self.cfg.coil_ack)[0])

    def clear_handshake(self) -> None:
        self.server.set(FC_DISCRETE, self.cfg.coil_result_ready, [False])
        if self.cfg.coil_ack is not None:
            self.server.set(FC_COILS, self.cfg.coil_ack, [False])

    def write_status(self, heartbeat: int, state: int) -> None:
        if self.cfg.hr_heartbeat is not None:
            self.server.set(FC_INPUT, self.cfg.hr_heartbeat, [heartbeat & 0xFFFF])
        if self.cfg.hr_state is not None:
            self.server.set(FC_INPUT, self.cfg.hr_state, [state])

    def write_reject_cmd(self, seq: int, value: int) -> None:
        if self.cfg.hr_reject_cmd is not None:
            self.server.set(FC_INPUT, self.cfg.hr_reject_cmd, [seq & 0xFFFF, value & 0xFFFF])

    def read_counters(self) -> Counters:
        c = self.cfg
        get = lambda a: None if a is None else int(self.server.get(FC_HOLDING, a)[0])  # noqa: E731
        t = c.hr_trigger_count
        return Counters(encoder=get(c.hr_encoder), clock=get(c.hr_plc_clock), trigger_count=get(t),
                        trigger_encoder=get(t + 1) if t is not None else None,
                        trigger_clock=get(t + 2) if t is not None else None)
