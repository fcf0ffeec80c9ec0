"""Login throttling, decided before any password is hashed: per client address, for all clients together,
and per user after repeated failures.

>>> guard = LoginGuard(per_minute=2, per_second=100, lockout_s=60, clock=lambda: 0.0)
>>> guard.admit("10.0.0.7"), guard.admit("10.0.0.7"), guard.admit("10.0.0.7") > 0
(0.0, 0.0, True)
>>> for _ in range(4):
...     guard.failed("olga")
>>> guard.user_wait("olga")      # the 4th failure in a row: wait 2 s
2.0
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

#: failures in a row a user may have before each further one doubles the wait (2 s, 4 s, 8 s, ...)
FREE_FAILURES = 3
#: a user's failures are forgotten this long after the last one
FORGET_S = 900.0
#: addresses and user names remembered at most (oldest forgotten first): a flood of new names cannot fill memory
MAX_TRACKED = 10_000


class TokenBucket:
    """``rate`` per second, up to ``burst`` at once."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, now

    def take(self, now: float) -> float:
        """0 if one may pass now (and takes it), else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class LoginGuard:
    """Rate limits on login attempts (answer 429 with Retry-After when one says wait)."""

    def __init__(self, per_minute: float, per_second: float, lockout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.lockout_s, self.clock = per_minute, lockout_s, clock
        self._lock = threading.Lock()
        self._global = TokenBucket(per_second, max(1.0, per_second * 5), clock())
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._fails: OrderedDict[str, tuple[int, float]] = OrderedDict()  # user -> (failures in a row, last one)

    def admit(self, client: str) -> float:
        """Seconds ``client`` must wait before trying to log in (0: go on)."""
        with self._lock:
            now = self.clock()
            bucket = self._clients.pop(client, None) or TokenBucket(self.per_minute / 60, max(1.0, self.per_minute), now)
            self._clients[client] = bucket
            while len(self._clients) > MAX_TRACKED:
                self._clients.popitem(last=False)
            wait = bucket.take(now)
            return wait or self._global.take(now)

    def user_wait(self, user: str) -> float:
        """Seconds ``user`` must wait after failed logins (0: go on)."""
        with self._lock:
            n, last = self._fails.get(user, (0, 0.0))
            if n <= FREE_FAILURES:
                return 0.0
            return max(0.0, last + min(2.0 ** (n - FREE_FAILURES), self.lockout_s) - self.clock())

    def failed(self, user: str) -> None:
        """Count a failed login of ``user`` (known or not: the answer must not tell which)."""
        with self._lock:
            now = self.clock()
            n, last = self._fails.pop(user, (0, 0.0))
            self._fails[user] = (1 if now - last > FORGET_S else n + 1, now)
            while len(self._fails) > MAX_TRACKED:
                self._fails.popitem(last=False)

    def succeeded(self, user: str) -> None:
        """A good login clears the user's failures."""
        with self._lock:
            self._fails.pop(user, None)
