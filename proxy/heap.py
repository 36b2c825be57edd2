"""The garbage collector tuned for a long-running server.

Python's full collection walks every tracked object. A started proxy holds
hundreds of thousands of them (FastAPI, SQLAlchemy, pydantic, aiohttp and their
caches), none of which ever becomes garbage, so each full collection under load
held the event loop for hundreds of milliseconds (dev/LOG.md, 2026-12-02 speed).
`settle()` collects once and then freezes what is left (`gc.freeze`: those
objects move to a permanent generation that collections skip), and makes the
young generation larger so a request's short-lived objects are collected in
fewer, cheaper passes.

Only the server calls it (`molt serve` / `molt proxy` / `molt worker`, after
the app started): a process that builds many apps, such as the tests, keeps
the default collector.
"""

from __future__ import annotations

import gc

# Allocations between two young collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


def settle() -> int:
    """Collect, freeze the survivors, widen the young generation; returns how many were frozen."""
    gc.collect()
    gc.freeze()
    _, mid, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, mid, old)
    return gc.get_freeze_count()
