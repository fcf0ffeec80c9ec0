"""The one interface every actuator backend honours, and the typed jobs the scheduler runs.

A backend owns the I/O to the reject mechanism (a PLC over Modbus TCP, a GPIO line, or
nothing); the :class:`~serving.lineio.actuation.scheduler.Actuator` owns *when* each
write happens. Backends register by ``kind`` with their own config class, the way
Frigate's detector plugins do.

>>> sorted(ActuatorBackend.__abstractmethods__)
['close', 'connect', 'read_encoder', 'set_reject', 'set_stop_line', 'take_ack', 'write_result']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

VERDICT_CODES = {"PASS": 1, "FAIL": 2}  #: result register values; anything else is 3 (unknown)


class ActuatorBackend(ABC):
    """I/O to the reject mechanism. Every method may raise on a transport error; the scheduler retries."""

    kind: ClassVar[str]

    @abstractmethod
    def connect(self) -> None:
        """Open the transport; raise ``ConnectionError`` when the device is unreachable."""

    @abstractmethod
    def close(self) -> None:
        """Release the transport."""

    @abstractmethod
    def set_reject(self, on: bool) -> None:
        """Drive the reject output."""

    @abstractmethod
    def set_stop_line(self, on: bool) -> None:
        """Drive the stop-line output."""

    @abstractmethod
    def write_result(self, seq: int, code: int) -> None:
        """Publish one part's sequence number and verdict code, then signal result-ready."""

    @abstractmethod
    def take_ack(self) -> bool:
        """True (and the handshake reset) when the PLC acknowledged the last result."""

    @abstractmethod
    def read_encoder(self) -> int:
        """The conveyor encoder's raw count."""


@dataclass(frozen=True)
class ResultJob:
    """Publish a part's result (sequence number + verdict code)."""

    seq: int
    code: int


@dataclass(frozen=True)
class EdgeJob:
    """One edge of a reject pulse."""

    seq: int
    on: bool


@dataclass(frozen=True)
class StopLineJob:
    """Raise the stop-line output (a late or missed reject)."""

    seq: int


@dataclass(frozen=True)
class EncoderPulseJob:
    """Fire the reject pulse when the encoder reaches ``target`` (None: now); give up after the timeout."""

    seq: int
    target: int | None
    width_ns: int
    since_ns: int


Job = ResultJob | EdgeJob | StopLineJob | EncoderPulseJob
