"""Alarms shared by the station's rooms, shown on the operator page and mirrored to ``/metrics``.

Two kinds, as a controls engineer expects them:

- **state** alarms (``raise_`` / ``clear``): active while their cause lasts -- PLC unreachable,
  camera silent, sync target offline -- and gone when the cause clears;
- **event** alarms (``event``): something happened to parts -- a late decision, a missed or
  short reject pulse, an inspection that crashed -- and stays on the page until an operator
  acknowledges it (the acknowledgement is audited by the API).

Every raise, clear and acknowledgement is logged, so the console tells the story too.

>>> a = Alarms()
>>> a.raise_("plc", "PLC unreachable")
>>> [x.name for x in a.active()]
['plc']
>>> a.clear("plc"); a.active()
[]
>>> a.event("pulse_missed", "part 7: reject pulse missed"); a.acknowledge("pulse_missed", "olga").acked_by
'olga'
>>> a.active()
[]
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("lineguard.alarms")


@dataclass
class Alarm:
    """One alarm on the page; a state alarm lasts while its cause does, an event alarm until ``acked_by``."""

    name: str
    message: str
    level: str
    since: float
    count: int = 1
    kind: str = "state"
    acked_by: str | None = None
    acked_at: float | None = None


class Alarms:
    """Thread-safe alarms keyed by name; raising again bumps the count."""

    def __init__(self, on_change: Callable[[str, bool], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._alarms: dict[str, Alarm] = {}
        self._on_change = on_change

    def _notify(self, name: str, shown: bool) -> None:
        if self._on_change:
            self._on_change(name, shown)

    def raise_(self, name: str, message: str, level: str = "error") -> None:
        """Raise (or re-raise) state alarm ``name``: shown until :meth:`clear`."""
        self._raise(name, message, level, "state")

    def event(self, name: str, message: str, level: str = "error") -> None:
        """Record an event alarm: shown until acknowledged, however often it recurs."""
        self._raise(name, message, level, "event")

    def _raise(self, name: str, message: str, level: str, kind: str) -> None:
        with self._lock:
            a = self._alarms.get(name)
            new, changed = a is None, True
            if a is None:
                self._alarms[name] = Alarm(name, message, level, time.time(), kind=kind)
            else:
                changed = a.message != message
                a.message, a.level, a.count, a.kind = message, level, a.count + 1, kind
                a.acked_by = a.acked_at = None
        if new or changed:  # a repeat of the same message only counts; the log stays readable
            (log.error if level == "error" else log.warning)("ALARM %s %s: %s", name, "raised" if new else "again",
                                                             message)
        self._notify(name, True)

    def clear(self, name: str) -> None:
        """The cause of ``name`` is gone: a state alarm disappears (logged); an event alarm waits for its ack."""
        with self._lock:
            a = self._alarms.get(name)
            if a is None or a.kind == "event":  # an event waits for its acknowledgement
                return
            del self._alarms[name]
        log.warning("ALARM %s cleared after %.1f s (%d times)", name, time.time() - a.since, a.count)
        self._notify(name, False)

    def acknowledge(self, name: str, user: str) -> Alarm | None:
        """An operator has seen ``name``: an event alarm goes; a state alarm stays until its cause clears."""
        with self._lock:
            a = self._alarms.get(name)
            if a is None:
                return None
            a.acked_by, a.acked_at = user, time.time()
            gone = a.kind == "event"
            if gone:
                del self._alarms[name]
        log.warning("ALARM %s acknowledged by %s%s", name, user, "" if gone else " (still active)")
        if gone:
            self._notify(name, False)
        return a

    def active(self) -> list[Alarm]:
        """Alarms on the page, oldest first."""
        with self._lock:
            return sorted(self._alarms.values(), key=lambda a: a.since)

    def is_active(self, name: str) -> bool:
        """True while alarm ``name`` is shown."""
        with self._lock:
            return name in self._alarms
