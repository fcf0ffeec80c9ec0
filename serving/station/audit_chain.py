"""The audit log's chain, checked: plain sha256 links, keyed MACs and the sealed head, as pure functions.

An entry's ``prev`` is the sha256 of the line before it; its ``mac`` is an HMAC-SHA256 of the entry
without the MAC; the head (entry count and last MAC) is sealed by the same key. :func:`check_chain` finds
an edited, removed, inserted or appended-by-others entry, a truncated log and an altered or missing head.

>>> check_chain([], {"entries": 0, "mac": None, "seal": seal(b"k" * 32, 0, None)}, b"k" * 32, "audit.head")[0].ok
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64


@dataclass(frozen=True)
class ChainCheck:
    """What :meth:`AuditLog.verify` found: ``ok``, how many entries, and the first problem in words."""

    ok: bool
    entries: int
    problem: str | None = None


def line_hash(line: str) -> str:
    """The plain sha256 link of one log line."""
    return hashlib.sha256(line.encode()).hexdigest()


def mac_of(key: bytes, entry: dict) -> str:
    """An entry's MAC: HMAC-SHA256 of the entry without its ``mac``, as canonical JSON."""
    body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True, allow_nan=False)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def seal(key: bytes, count: int, mac: str | None) -> str:
    """The head's seal over the entry count and the last MAC."""
    return hmac.new(key, f"audit-head {count} {mac}".encode(), hashlib.sha256).hexdigest()


def check_chain(lines: list[str], head: dict | None, key: bytes,
                head_file: str | Path) -> tuple[ChainCheck, tuple[int, str, str | None]]:
    """Verify every line and the head; returns the verdict and (count, last line hash, last MAC)."""
    prev, mac, keyed = GENESIS, None, False

    def bad(problem: str) -> tuple[ChainCheck, tuple]:
        return ChainCheck(False, len(lines), problem), (0, GENESIS, None)

    if head is None:
        return bad(f"its head {head_file} is missing (deleted?)")
    if not isinstance(head, dict) or not hmac.compare_digest(
            str(head.get("seal")), seal(key, head.get("entries"), head.get("mac"))):
        return bad(f"its head {head_file} was altered (the seal does not verify with the audit key)")
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            return bad(f"entry {i} is not JSON")
        if not isinstance(entry, dict) or entry.get("prev") != prev:
            return bad(f"entry {i} does not follow from the one before it (an entry was edited, removed or inserted)")
        if "mac" in entry:
            if entry.get("i") != i or not hmac.compare_digest(str(entry["mac"]), mac_of(key, entry)):
                return bad(f"entry {i} was changed (its MAC does not verify with the audit key)")
            keyed, mac = True, entry["mac"]
        elif keyed:
            return bad(f"entry {i} has no MAC after keyed entries (written by something other than the station)")
        prev = line_hash(line)
    n = head.get("entries")
    if not isinstance(n, int) or len(lines) < n:
        return bad(f"it has {len(lines)} entries but its head says {n}: entries were removed from its end")
    at_head = json.loads(lines[n - 1]).get("mac") if n else None
    if at_head != head.get("mac"):
        return bad(f"entry {n - 1} is not the one its head names (the log was rewritten)")
    return ChainCheck(True, len(lines)), (len(lines), prev, mac)


def plain_chain_break(lines: list[str]) -> int | None:
    """Index of the first line whose plain sha256 link is broken (no key needed), or None."""
    prev = GENESIS
    for i, line in enumerate(lines):
        try:
            if json.loads(line).get("prev") != prev:
                return i
        except (ValueError, AttributeError):
            return i
        prev = line_hash(line)
    return None


def verify_chain(path: str | Path) -> int | None:
    """Index of the first entry whose plain sha256 link is broken, or None (no key needed; see :meth:`AuditLog.verify`)."""
    return plain_chain_break(Path(path).read_text().splitlines())
