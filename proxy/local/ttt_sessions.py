"""Per-session fast weights for TTT-enabled versions served by the local backend.

A `ttt_delta` version that ships trained TTT layers (`ttt.safetensors`, modeling/ttt.py)
is served by a `TTTRunner`. Its fast weights belong to a session, not to the model: each
request gets a `SessionRunner` bound to its session's `TTTState` (keyed by tenant,
session id and version), so that

- a session starts from the served version's W_down (an empty state) and its fast
  weights adapt as its tokens pass through the engine: the prompt tokens it has not
  absorbed yet, and every generated token;
- a session never sees another's fast weights: every forward pass opens the TTT stream
  on its own state (the engine thread runs one forward at a time);
- the state is dropped when the session ends (`X-Session-Done`), after `idle_s` without
  a request, or, least recently used first, when its tenant's states pass that tenant's
  limits (`tenant_limits`: most states, most bytes; only that tenant's states go), or
  when all states together pass `max_bytes` (taken from the tenant holding the most
  bytes, so that one tenant's many long sessions do not push out another's).

What a prompt adds: the engine re-renders the whole conversation at every request. The
state remembers the token ids of the last context it saw (`seen`); the prompt's longest
common prefix with them goes through with the fast weights applied but not updated, the
rest (new messages) is absorbed. A rewritten history (an agent that drops old messages)
is absorbed again from its first changed token; clipping bounds what that can add.

All state is touched on the engine thread only (inside `forward`); the asyncio side only
adds, counts and drops entries under a lock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from modeling.loading import forward_step
from modeling.ttt import TTT, TTTState

Key = tuple[str, str, str]  # tenant, session id, version
# A tenant's own limits: most states and most bytes (None: no limit of its own).
TenantLimits = Callable[[str], tuple[int | None, int | None]]


def _no_tenant_limits(tenant: str) -> tuple[int | None, int | None]:
    return None, None


class TTTRunner:
    """A TTT-enabled version: its model (base + delta) and its TTT layers. Requests run
    through a `SessionRunner` (`TTTSessions.runner`), never through this directly."""

    def __init__(self, model: Any, ttt: TTT) -> None:
        self.model = model
        self.ttt = ttt

    def forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        raise RuntimeError("a TTT version is served through TTTSessions.runner (per-session "
                           "fast weights), never directly")


@dataclass(slots=True)
class _Entry:
    state: TTTState | None = None
    seen: list[int] = field(default_factory=list)
    users: int = 0  # requests holding it now
    last_used: float = 0.0
    nbytes: int = 0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SessionRunner:
    """One request's view of a TTT version: forward passes stream through its session's state."""

    def __init__(self, runner: TTTRunner, entry: _Entry, on_step: Callable[[], None]) -> None:
        self.runner = runner
        self.entry = entry
        self.on_step = on_step

    def forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        e = self.entry
        ttt = self.runner.ttt
        if e.state is None:
            e.state = ttt.new_state()
        ids = [int(t) for t in input_ids[0]]
        model = self.runner.model
        if cache is None:  # the prompt: apply the fast weights to what the session saw
            known = min(_common_prefix(e.seen, ids), len(ids))
            logits = None
            if known:
                with ttt.stream(e.state, update=False):
                    logits, cache = forward_step(model, input_ids[:, :known], cache)
            if known < len(ids):
                with ttt.stream(e.state):
                    logits, cache = forward_step(model, input_ids[:, known:], cache)
            e.seen = ids
        else:
            with ttt.stream(e.state):
                logits, cache = forward_step(model, input_ids, cache)
            e.seen.extend(ids)
        e.nbytes = e.state.nbytes()
        self.on_step()
        assert logits is not None
        return logits, cache


class TTTSessions:
    """The fast-weight states of every session served by TTT versions (see the module doc)."""

    def __init__(self, *, idle_s: float = 900.0, max_bytes: int = 1 << 30,
                 tenant_limits: TenantLimits = _no_tenant_limits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_bytes = max_bytes
        self.tenant_limits = tenant_limits
        self.clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0  # states dropped for the memory cap of all tenants together
        self.expired = 0  # states dropped after idle_s
        self.tenant_evicted: dict[str, int] = {}  # states dropped for their tenant's limits

    def runner(self, base: TTTRunner, tenant: str, session_id: str | None,
               version: str) -> SessionRunner:
        """The runner for one request of `session_id` (None: a state for this request only)."""
        if session_id is None:
            return SessionRunner(base, _Entry(), lambda: None)
        key = (tenant, session_id, version)
        with self._lock:
            self._sweep()
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            self._entries.move_to_end(key)
            entry.users += 1
            entry.last_used = self.clock()
        return SessionRunner(base, entry, self._cap)

    def release(self, runner: SessionRunner, *, session_done: bool, tenant: str,
                session_id: str | None) -> None:
        """A request ended; after `X-Session-Done` its session's states go."""
        with self._lock:
            runner.entry.users = max(0, runner.entry.users - 1)
            runner.entry.last_used = self.clock()
            if session_done and session_id is not None:
                for key in [k for k in self._entries if k[:2] == (tenant, session_id)]:
                    if self._entries[key] is runner.entry or self._entries[key].users == 0:
                        del self._entries[key]

    def _cap(self) -> None:
        with self._lock:
            self._sweep()

    def _sweep(self) -> None:
        """Drop idle states past `idle_s`, then each tenant's least recently used over its
        own limits, then, over `max_bytes`, the least recently used of the tenant holding
        the most bytes (caller holds the lock; states in use are kept)."""
        now = self.clock()
        for key in [k for k, e in self._entries.items()
                    if e.users == 0 and now - e.last_used > self.idle_s]:
            del self._entries[key]
            self.expired += 1
        by_tenant: dict[str, list[Key]] = {}
        for key in self._entries:  # least recently used first
            by_tenant.setdefault(key[0], []).append(key)
        held: dict[str, int] = {}
        for tenant, keys in by_tenant.items():
            keys[:] = self._within_tenant(tenant, keys)
            held[tenant] = sum(self._entries[k].nbytes for k in keys)
        total = sum(held.values())
        while total > self.max_bytes:
            # the tenant holding the most bytes in states no request is using
            free = {t: keys for t, keys in by_tenant.items()
                    if any(self._entries[k].users == 0 for k in keys)}
            if not free:
                break
            tenant = max(free, key=lambda t: held[t])
            key = next(k for k in free[tenant] if self._entries[k].users == 0)
            nbytes = self._entries.pop(key).nbytes
            by_tenant[tenant].remove(key)
            held[tenant] -= nbytes
            total -= nbytes
            self.evicted += 1

    def _within_tenant(self, tenant: str, keys: list[Key]) -> list[Key]:
        """Drop `tenant`'s least recently used states (of `keys`, oldest first) while it is
        over its own limits; the states kept."""
        max_states, max_bytes = self.tenant_limits(tenant)
        if max_states is None and max_bytes is None:
            return keys
        count = len(keys)
        held = sum(self._entries[k].nbytes for k in keys)
        kept: list[Key] = []
        for key in keys:
            e = self._entries[key]
            over = ((max_states is not None and count > max_states)
                    or (max_bytes is not None and held > max_bytes))
            if not over or e.users:
                kept.append(key)
                continue
            del self._entries[key]
            count -= 1
            held -= e.nbytes
            self.tenant_evicted[tenant] = self.tenant_evicted.get(tenant, 0) + 1
        return kept

    def __len__(self) -> int:
        return len(self._entries)

    def sessions(self) -> list[Key]:
        with self._lock:
            return list(self._entries)

    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def stats(self) -> dict[str, object]:
        """What `/healthz` shows: states held (in all and per tenant), their bytes, and how many
        were dropped for the memory cap of all tenants, after `idle_s`, and for a tenant's limits."""
        with self._lock:
            per_tenant: dict[str, dict[str, int]] = {}
            for (tenant, _, _), e in self._entries.items():
                t = per_tenant.setdefault(tenant, {"sessions": 0, "bytes": 0})
                t["sessions"] += 1
                t["bytes"] += e.nbytes
            return {"sessions": len(self._entries), "bytes": sum(t["bytes"] for t in per_tenant.values()),
                    "max_bytes": self.max_bytes, "evicted": self.evicted, "expired": self.expired,
                    "tenant_evicted": dict(self.tenant_evicted), "tenants": per_tenant}
