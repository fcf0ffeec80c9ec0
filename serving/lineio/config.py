"""Settings of the frame source (the ``source:`` section of a station config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from serving.strict import StrictModel


class SourceConfig(StrictModel):
    """Where frames come from. ``replay`` (a folder or video) is the embedded default."""

    kind: Literal["replay", "opencv"] = "replay"
    path: str | None = Field(None, description="replay: image folder or video file")
    rate_hz: float = Field(10.0, gt=0, description="replay / free-run frame rate")
    loop: bool = False
    device: str | int | None = Field(None, description="opencv: camera index, RTSP/HTTP URL or file")
    trigger: Literal["free_run", "modbus", "http"] = "free_run"
    trigger_coil: int = Field(4, ge=0, le=65535, description="modbus trigger: coil the PLC sets to request a capture")
    trigger_poll_ms: float = Field(1.0, gt=0)
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(10.0, gt=0)
    queue_size: int = Field(4, ge=1, description="frames waiting beyond this are dropped and counted")

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.kind == "replay" and not self.path:
            raise ValueError("source.path is required for kind 'replay' (a folder of images or a video file)")
        if self.kind == "opencv" and self.device is None:
            raise ValueError("source.device is required for kind 'opencv' (camera index, RTSP URL or file)")
        return self
