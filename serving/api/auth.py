"""Logins, roles and sessions for the operator page and API.

Passwords are stored as PBKDF2-SHA256 hashes in the station config
(``lineguard-station hash-password``); a login returns a bearer token that expires.

>>> h = hash_password("s3cret", iterations=1000)
>>> verify_password("s3cret", h), verify_password("nope", h)
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

ROLES = {"operator": 1, "engineer": 2}


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


@dataclass
class Session:
    """A logged-in user."""

    user: str
    role: str
    expires: float


class Sessions:
    """Bearer tokens in memory (a station restart logs everyone out)."""

    def __init__(self, hours: float) -> None:
        self.ttl = hours * 3600
        self._lock = threading.Lock()
        self._tokens: dict[str, Session] = {}

    def issue(self, user: str, role: str) -> str:
        """A new token for ``user``."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = Session(user, role, time.time() + self.ttl)
        return token

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token``, if any."""
        if not token:
            return None
        with self._lock:
            s = self._tokens.get(token)
            if s and s.expires < time.time():
                del self._tokens[token]
                return None
            return s


def allowed(role: str, needed: str) -> bool:
    """True if ``role`` may do what ``needed`` may (engineer > operator)."""
    return ROLES.get(role, 0) >= ROLES[needed]
