"""Settings of the frame source (the ``source:`` section of a station config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from serving.strict import StrictModel


class GpioTriggerConfig(StrictModel):
    """A hardware trigger input (libgpiod v2)."""

    chip: str = "gpiochip0"
    line: int = Field(27, ge=0)
    edge: Literal["rising", "falling"] = "rising"


class SourceConfig(StrictModel):
    """Where frames come from, and what triggers a capture. ``replay`` (a folder or video) is the embedded default."""

    kind: Literal["replay", "opencv"] = "replay"
    path: str | None = Field(None, description="replay: image folder or video file")
    rate_hz: float = Field(10.0, gt=0, description="replay / free-run frame rate")
    loop: bool = False
    preload_mb: float = Field(0.0, ge=0, le=65536, description="replay of a folder: decode its images once at start, "
                              "up to this many MiB of pixels, so a trigger hands over pixels as a camera does "
                              "(benchmarks); 0 decodes each image at its trigger")
    device: str | int | None = Field(None, description="opencv: camera index, RTSP/HTTP URL or file")
    trigger: Literal["free_run", "modbus", "modbus_counter", "http", "gpio"] = "free_run"
    trigger_poll_ms: float = Field(1.0, gt=0, le=100, description="modbus (coil) trigger, client mode: poll period; "
                                                                  "the trigger time is uncertain by half of it")
    gpio_trigger: GpioTriggerConfig = GpioTriggerConfig()
    open_timeout_s: float = Field(3.0, gt=0, le=60, description="opencv: opening a stream never takes longer")
    read_timeout_s: float = Field(1.0, gt=0, le=60, description="opencv: one read never blocks longer")
    watchdog_s: float = Field(1.0, gt=0, le=60, description="opencv: no new frame for this long raises the camera alarm")
    max_frame_age_ms: float = Field(250.0, gt=0, le=10_000, description="opencv: a frame further than this from its "
                                                                        "trigger is never inspected as that part's")
    reconnect_max_s: float = Field(2.0, gt=0, le=60)
    queue_size: int = Field(4, ge=1, description="frames waiting beyond this are dropped and counted")

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.kind == "replay" and not self.path:
            raise ValueError("source.path is required for kind 'replay' (a folder of images or a video file)")
        if self.kind != "replay" and self.preload_mb:
            raise ValueError("source.preload_mb applies to kind 'replay' (a folder of images); remove it for a camera")
        if self.kind == "opencv" and self.device is None:
            raise ValueError("source.device is required for kind 'opencv' (camera index, RTSP URL or file)")
        return self
