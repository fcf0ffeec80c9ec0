"""Active alarms, shared by the station's parts and shown on the operator page.

>>> a = Alarms()
>>> a.raise_("plc", "PLC unreachable")
>>> [x.name for x in a.active()]
['plc']
>>> a.clear("plc"); a.active()
[]
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Alarm:
    """One active alarm."""

    name: str
    message: str
    level: str
    since: float
    count: int = 1


class Alarms:
    """Thread-safe set of active alarms, keyed by name; raising again bumps the count."""

    def __init__(self, on_change=None) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, Alarm] = {}
        self._on_change = on_change

    def raise_(self, name: str, message: str, level: str = "error") -> None:
        """Raise (or re-raise) alarm ``name``."""
        with self._lock:
            if name in self._active:
                a = self._active[name]
                a.message, a.count = message, a.count + 1
            else:
                self._active[name] = Alarm(name, message, level, time.time())
        if self._on_change:
            self._on_change(name, True)

    def clear(self, name: str) -> None:
        """Clear alarm ``name`` if active."""
        with self._lock:
            removed = self._active.pop(name, None)
        if removed and self._on_change:
            self._on_change(name, False)

    def active(self) -> list[Alarm]:
        """Active alarms, oldest first."""
        with self._lock:
            return sorted(self._active.values(), key=lambda a: a.since)

    def is_active(self, name: str) -> bool:
        """True while alarm ``name`` is raised."""
        with self._lock:
            return name in self._active
