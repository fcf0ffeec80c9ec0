"""Builds the station's frame source (camera + trigger) from its config.

>>> source, http_trigger = make_source(cfg, alarms, actuator)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

from serving.alarms import Alarms
from serving.config import StationConfig
from serving.lineio.actuation.modbus_server import shared_server
from serving.lineio.actuation.scheduler import Actuator
from serving.lineio.cameras import ReplayCamera
from serving.lineio.capture import FrameSource
from serving.lineio.live_camera import LiveCamera
from serving.lineio.triggers import (CounterTrigger, FreeRunTrigger, GpioTrigger, HttpTrigger, ModbusCoilTrigger,
                                     ServerCoilTrigger)


def _modbus_client(cfg: StationConfig) -> Callable:
    m = cfg.actuator.modbus

    def client():
        from pymodbus.client import ModbusTcpClient

        c = ModbusTcpClient(m.host, port=m.port, timeout=m.timeout_s, retries=0)
        if not c.connect():
            raise ConnectionError(f"{m.host}:{m.port} unreachable")
        return c
    return client


def make_source(cfg: StationConfig, alarms: Alarms, actuator: Actuator, first_seq: int = 1,
                on_unseen: Callable[[str], None] | None = None) -> tuple[FrameSource, HttpTrigger | None]:
    """(the capture source, the HTTP trigger when ``source.trigger: http``, else None)."""
    s, m = cfg.source, cfg.actuator.modbus
    if s.kind == "replay":
        camera = ReplayCamera(s.path, s.loop, s.preload_mb)
    else:
        camera = LiveCamera(s.device, alarms, open_timeout_s=s.open_timeout_s, read_timeout_s=s.read_timeout_s,
                            watchdog_s=s.watchdog_s, max_frame_age_ms=s.max_frame_age_ms,
                            reconnect_max_s=s.reconnect_max_s)
    http = None
    if s.trigger == "http":
        trigger = http = HttpTrigger()
    elif s.trigger == "modbus" and m.mode == "server":
        trigger = ServerCoilTrigger(shared_server(m), m.coil_trigger)
    elif s.trigger == "modbus":
        trigger = ModbusCoilTrigger(_modbus_client(cfg), m.coil_trigger, m.device_id, s.trigger_poll_ms, alarms)
    elif s.trigger == "modbus_counter":
        trigger = CounterTrigger(actuator.counters.clock, alarms)
        actuator.counters.on_trigger = trigger.on_counter
    elif s.trigger == "gpio":
        g = s.gpio_trigger
        trigger = GpioTrigger(g.chip, g.line, g.edge == "rising", alarms)
    else:
        trigger = FreeRunTrigger(s.rate_hz)
    parts = not (s.kind == "opencv" and s.trigger == "free_run")
    return FrameSource(camera, trigger, s.queue_size, cfg.max_frames, every_trigger_is_a_part=parts,
                       first_seq=first_seq, on_unseen=on_unseen), http
