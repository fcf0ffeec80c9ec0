"""Builds the station's frame source (camera + trigger) from its config.

>>> source, http_trigger = make_source(cfg, alarms)   # doctest: +SKIP
"""

from __future__ import annotations

from serving.alarms import Alarms
from serving.config import StationConfig
from serving.lineio.cameras import OpenCVCamera, ReplayCamera
from serving.lineio.capture import FrameSource
from serving.lineio.triggers import FreeRunTrigger, HttpTrigger, ModbusTrigger


def make_source(cfg: StationConfig, alarms: Alarms) -> tuple[FrameSource, HttpTrigger | None]:
    """(the capture source, the HTTP trigger when ``source.trigger: http``, else None)."""
    s = cfg.source
    camera = ReplayCamera(s.path, s.loop) if s.kind == "replay" else OpenCVCamera(
        s.device, alarms, s.reconnect_initial_s, s.reconnect_max_s)
    http = None
    if s.trigger == "http":
        trigger = http = HttpTrigger()
    elif s.trigger == "modbus":
        m = cfg.actuator.modbus

        def client():
            from pymodbus.client import ModbusTcpClient

            c = ModbusTcpClient(m.host, port=m.port, timeout=m.timeout_s, retries=0)
            if not c.connect():
                raise ConnectionError(f"{m.host}:{m.port} unreachable")
            return c

        trigger = ModbusTrigger(client, s.trigger_coil, m.device_id, s.trigger_poll_ms, alarms)
    else:
        trigger = FreeRunTrigger(s.rate_hz)
    return FrameSource(camera, trigger, s.queue_size, cfg.max_frames), http
