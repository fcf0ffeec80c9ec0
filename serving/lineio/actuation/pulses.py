"""Every reject pulse checked: when it started against when it should have, and how long it lasted.

The worker reports each edge it writes (the request's midpoint is the station's best estimate of
when it reached the PLC). A pulse that starts later than ``start_tolerance_ms``, or lasts less than
``min_pulse_ms``, is counted, raised as an event alarm and handed to ``on_report`` so the part's
record says what really happened; start and width errors go to ``/metrics``.

>>> m = PulseMonitor(5.0, 16.0, 20.0, Alarms(), lambda k: None)
>>> m.started(7, intended_ns=0, at_ns=2_000_000); m.ended(at_ns=22_000_000)[0].width_ms
20.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from serving.alarms import Alarms


@dataclass(frozen=True)
class PulseReport:
    """What one part's reject pulse really was."""

    seq: int
    start_error_ms: float | None
    width_ms: float | None
    late: bool = False
    short: bool = False
    missed: bool = False
    note: str = ""


class PulseMonitor:
    """Pairs ON and OFF edges per part and judges each finished pulse."""

    def __init__(self, start_tolerance_ms: float, min_width_ms: float, pulse_ms: float, alarms: Alarms,
                 count: Callable[[str], None], on_report: Callable[[PulseReport], None] | None = None,
                 observe: Callable[[float, float], None] | None = None) -> None:
        self.tolerance, self.min_width, self.pulse_ms = start_tolerance_ms, min_width_ms, pulse_ms
        self.alarms, self.count, self.on_report, self.observe = alarms, count, on_report, observe
        self._open: dict[int, tuple[int, float]] = {}  # seq -> (effective start ns, start error ms)
        self.reports: list[PulseReport] = []

    def started(self, seq: int, intended_ns: int, at_ns: int | None) -> None:
        """The output is on for part ``seq``: switched on at ``at_ns``, or already on (None) from a merged pulse."""
        start = intended_ns if at_ns is None else at_ns
        self._open[seq] = (start, (start - intended_ns) / 1e6)

    def ended(self, at_ns: int) -> list[PulseReport]:
        """The output went off at ``at_ns``: every open pulse ends here; returns their reports."""
        out = []
        for seq, (start, err) in sorted(self._open.items()):
            width = (at_ns - start) / 1e6
            late, short = err > self.tolerance, width < self.min_width
            notes = [f"started {err:+.1f} ms late" if late else "", f"lasted {width:.1f} ms" if short else ""]
            out.append(self._finish(PulseReport(seq, err, width, late, short, note="; ".join(n for n in notes if n))))
        self._open.clear()
        return out

    def missed(self, seq: int, overdue_ms: float, why: str) -> PulseReport:
        """A pulse that was not fired (it would have hit another part)."""
        self._open.pop(seq, None)
        return self._finish(PulseReport(seq, overdue_ms, None, late=True, missed=True,
                                        note=f"not fired: {overdue_ms:.0f} ms overdue ({why})"))

    def _finish(self, r: PulseReport) -> PulseReport:
        if self.observe is not None and r.width_ms is not None:
            self.observe(r.start_error_ms / 1e3, (r.width_ms - self.pulse_ms) / 1e3)
        if r.missed:
            self.count("missed")
            self.alarms.event("pulse_missed", f"reject pulse for part {r.seq} {r.note}; check that part by hand")
        else:
            if r.late:
                self.count("pulse_late")
                self.alarms.event("pulse_late", f"part {r.seq}: reject pulse {r.note} (tolerance {self.tolerance:g} ms)")
            if r.short:
                self.count("pulse_short")
                self.alarms.event("pulse_short", f"part {r.seq}: reject pulse {r.note}, minimum {self.min_width:g} ms")
        self.reports.append(r)
        del self.reports[:-1000]
        if self.on_report is not None:
            self.on_report(r)
        return r
