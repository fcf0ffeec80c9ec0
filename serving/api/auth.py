"""Logins, roles and sessions for the operator page and API.

Passwords are stored as PBKDF2-SHA256 hashes in the station config
(``lineguard-station hash-password``); a login returns a bearer token that expires and can be
revoked (logout, or an engineer ending all of a user's sessions). Password checks run one at a
time on a low-priority thread with a short queue (:class:`PasswordChecker`), so a login flood
cannot take the CPU from inspection.

>>> h = hash_password("s3cret", iterations=1000)
>>> verify_password("s3cret", h), verify_password("nope", h)
(True, False)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from serving.errors import ConfigError

ROLES = {"operator": 1, "engineer": 2}
#: the passwords the project ships for its demo (station.example.yaml, README): refused unless ``api.demo``
DEMO_PASSWORDS = ("operator", "engineer")


def hash_password(password: str, iterations: int = 200_000) -> str:
    """``pbkdf2_sha256$iterations$salt$hash`` for the config file."""
    salt = secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash."""
    try:
        algo, iterations, salt, digest = stored.split("$")
        if algo != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations)).hex()
    except ValueError:
        return False
    return hmac.compare_digest(got, digest)


@functools.lru_cache(maxsize=64)
def _is(password: str, stored: str) -> bool:
    return verify_password(password, stored)


def demo_password_users(users: dict) -> list[str]:
    """Users (of ``api.users``) whose password is a shipped demo password or their own name."""
    pairs = [(name, pw, u.password_hash) for name, u in users.items() for pw in dict.fromkeys((*DEMO_PASSWORDS, name))]
    with ThreadPoolExecutor(max(1, min(len(pairs), os.cpu_count() or 1))) as pool:  # PBKDF2 releases the GIL
        hits = pool.map(lambda p: _is(p[1], p[2]), pairs)
        return sorted({name for (name, _, _), hit in zip(pairs, hits) if hit})


def refuse_demo_passwords(api) -> None:
    """:class:`ConfigError` when a user of ``api`` (an ``ApiConfig``) has a demo password and ``api.demo`` is off."""
    if api.demo:
        return
    bad = demo_password_users(api.users)
    if bad:
        raise ConfigError(f"api.users: {', '.join(bad)} still have a demo password (shipped in station.example.yaml, "
                          "or the user's own name); set real ones with `lineguard-station hash-password`, or, on a "
                          "demo station only, set api.demo: true (or run --demo) and the page will say DEMO")


def lower_priority(niceness: int = 10) -> None:
    """Make the calling thread (and the threads it starts later) yield the CPU to the inspection thread (Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not allowed: the bounded queue still limits the load
        pass


class PasswordChecker:
    """PBKDF2 checks on one low-priority thread, at most ``waiting`` queued behind the running one."""

    def __init__(self, waiting: int = 4) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="password-check", initializer=lower_priority)
        self._slots = threading.BoundedSemaphore(waiting + 1)

    def check(self, password: str, stored: str) -> bool | None:
        """True or False, or None when too many checks are already queued (the caller answers 429)."""
        if not self._slots.acquire(blocking=False):
            return None
        try:
            return self._pool.submit(verify_password, password, stored).result()
        finally:
            self._slots.release()


@dataclass
class Session:
    """A logged-in user."""

    user: str
    role: str
    expires: float
    key: str = ""  # the sha256 of the token: what logout removes


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Bearer tokens in memory, kept as their sha256 (a station restart logs everyone out)."""

    def __init__(self, hours: float) -> None:
        self.ttl = hours * 3600
        self._lock = threading.Lock()
        self._tokens: dict[str, Session] = {}

    def issue(self, user: str, role: str) -> str:
        """A new token for ``user``."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            for k in [k for k, s in self._tokens.items() if s.expires < now]:
                del self._tokens[k]
            key = _token_key(token)
            self._tokens[key] = Session(user, role, now + self.ttl, key)
        return token

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token``, if any."""
        if not token:
            return None
        key = _token_key(token)
        with self._lock:
            s = self._tokens.get(key)
            if s and s.expires < time.time():
                del self._tokens[key]
                return None
            return s

    def revoke(self, session: Session) -> None:
        """End one session (logout)."""
        with self._lock:
            self._tokens.pop(session.key, None)

    def revoke_user(self, user: str) -> int:
        """End every session of ``user``; returns how many."""
        with self._lock:
            keys = [k for k, s in self._tokens.items() if s.user == user]
            for k in keys:
                del self._tokens[k]
        return len(keys)

    def listing(self) -> list[dict]:
        """Per user: role, live sessions and the last expiry (never the tokens)."""
        now, out = time.time(), {}
        with self._lock:
            for s in self._tokens.values():
                if s.expires >= now:
                    row = out.setdefault(s.user, {"user": s.user, "role": s.role, "sessions": 0, "expires": 0.0})
                    row["sessions"] += 1
                    row["expires"] = max(row["expires"], s.expires)
        return [out[u] for u in sorted(out)]


def allowed(role: str, needed: str) -> bool:
    """True if ``role`` may do what ``needed`` may (engineer > operator)."""
    return ROLES.get(role, 0) >= ROLES[needed]
