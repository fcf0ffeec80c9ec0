"""The one interface every actuator backend honours, and the typed jobs the I/O worker runs.

A backend owns the I/O to the reject mechanism (a PLC over Modbus TCP as client or server, a
GPIO line, or nothing); the :class:`~serving.lineio.actuation.scheduler.Actuator` decides *what*
to write and the :class:`~serving.lineio.actuation.worker.IoWorker` *when*. Backends register by
``kind`` with their own config class, the way Frigate's detector plugins do. A backend without a
signal (GPIO has no result registers) makes that method a no-op and says so in ``signals``.

>>> sorted(ActuatorBackend.__abstractmethods__)
['close', 'connect', 'set_reject']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

#: verdict register values: 0 none yet, 1 PASS, 2 FAIL, 3 FAIL because the inspection itself failed
VERDICT_CODES = {"PASS": 1, "FAIL": 2, "FAIL_SAFE": 3}


@dataclass(frozen=True)
class Counters:
    """What the PLC counts, read in one go: encoder, its millisecond clock, and its last trigger."""

    encoder: int | None = None
    clock: int | None = None
    trigger_count: int | None = None
    trigger_encoder: int | None = None
    trigger_clock: int | None = None


class ActuatorBackend(ABC):
    """I/O to the reject mechanism. Every method may raise on a transport error; the worker retries."""

    kind: ClassVar[str]
    #: which optional signals this backend really has (the rest are no-ops)
    signals: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def connect(self) -> None:
        """Open the transport; raise ``ConnectionError`` when the device is unreachable."""

    @abstractmethod
    def close(self) -> None:
        """Release the transport."""

    @abstractmethod
    def set_reject(self, on: bool) -> None:
        """Drive the reject output."""

    def link_error(self) -> str | None:
        """Why the device is not really listening although the transport is up (a PLC that stopped polling)."""
        return None

    def set_stop_line(self, on: bool) -> None:
        """Drive the stop-line output."""

    def read_stop_line(self) -> bool | None:
        """The stop-line output as the PLC has it now (it may have cleared it); None if unknown."""
        return None

    def write_result(self, seq: int, code: int, reject_cmd: tuple[int, int] | None = None) -> None:
        """Publish one part's sequence number and verdict code (and its reject request), then result-ready."""

    def read_ack(self) -> bool:
        """True when the PLC has acknowledged the result on the registers."""
        return True

    def clear_handshake(self) -> None:
        """Reset result-ready and ack after the PLC acknowledged."""

    def write_status(self, heartbeat: int, state: int) -> None:
        """The heartbeat counter and the station-state code."""

    def write_reject_cmd(self, seq: int, value: int) -> None:
        """The reject command registers: sequence (low 16 bits) and PLC-clock deadline or target."""

    def read_counters(self) -> Counters:
        """The PLC's encoder, clock and trigger counter, as configured."""
        raise RuntimeError(f"the {self.kind} actuator reads no PLC counters; use delay_mode: time and "
                           "pulse_owner: station")


@dataclass(frozen=True)
class ResultJob:
    """Publish a part's result; in PLC-owned mode with its reject request."""

    seq: int
    code: int
    reject_cmd: tuple[int, int] | None = None


@dataclass(frozen=True)
class EdgeJob:
    """One edge of a reject pulse. An 'on' edge is dropped after ``deadline_ns``: it would hit another part."""

    seq: int
    on: bool
    intended_ns: int
    deadline_ns: int


@dataclass(frozen=True)
class GuardJob:
    """The reject command written just before a pulse: the PLC-clock time after which the output must be off."""

    seq: int
    deadline_clock: int


@dataclass(frozen=True)
class StopLineJob:
    """Drive the stop-line output (a late, missed or unseen reject; or an operator's reset)."""

    seq: int
    reason: str
    on: bool = True


@dataclass(frozen=True)
class EncoderPulseJob:
    """Fire the reject pulse when the encoder reaches ``target`` (None: now); give up after the timeout."""

    seq: int
    target: int | None
    width_ns: int
    since_ns: int


Job = ResultJob | EdgeJob | GuardJob | StopLineJob | EncoderPulseJob
