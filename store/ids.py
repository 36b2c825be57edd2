"""Time-sortable identifiers (UUIDv7, RFC 9562)."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0
# The random bits come from a generator seeded from the OS once per process (and again in
# a forked child), not from os.urandom per id: that is a system call which releases the
# GIL on the event loop's thread several times per request. Ids are unique, not secret.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then a counter and random bits.

    Ids made in the same millisecond by this process stay ordered (12-bit counter
    in rand_a, as RFC 9562 method 1 allows).
    """
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = 0
        seq = _seq
        rand_b = _rng.getrandbits(62)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= seq << 64
    value |= 0b10 << 62
    value |= rand_b
    return uuid.UUID(int=value)


def new_id(prefix: str) -> str:
    """A readable time-sortable id such as `turn_0191c2...`."""
    return f"{prefix}_{uuid7().hex}"
