"""Progress for anything longer than a few seconds: a bar on a terminal, a few plain lines in a log.

>>> for _ in progress(range(3), desc="demo", total=3): pass   # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it",
             enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` with progress: tqdm's bar when stderr is a terminal, otherwise one line per 25 % (or 30 s)."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False)
        return
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    t0 = last = time.monotonic()
    next_mark = 0.25
    for i, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        frac = i / total if total else 0.0
        if (total and frac >= next_mark) or now - last > 30:
            print(f"{desc}: {i}/{total or '?'} {unit} ({now - t0:.0f} s)", file=sys.stderr, flush=True)
            last = now
            while total and next_mark <= frac:
                next_mark += 0.25
