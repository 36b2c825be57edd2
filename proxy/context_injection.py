"""The context block (molt's fast weights) into requests.

Each tenant has at most one active context version (written by the evolver's
context optimizer). On a main turn it goes in as one delimited system message
(`modeling.blocks.render_context_block`) after the agent's system prompt and
molt's skills block; the turn records the version. The active version is
re-read at most every `ttl_s`, so a new one serves within a second or two in
every process. A replay may name a candidate version, or none
(`X-Molt-Context`, parsed into `ctx.replay`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modeling.blocks import CONTEXT_OPEN, render_context_block
from proxy.hooks import TurnContext
from proxy.replay import NO_CONTEXT
from proxy.state import ProxyState
from store.errors import NotFound, StoreError
from store.evolution import ContextVersion, EvolutionStore

_LEADING = ("system", "developer")


def insert_context(messages: list[Any], block: str) -> list[Any]:
    kept = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system"
                                        and isinstance(m.get("content"), str)
                                        and m["content"].startswith(CONTEXT_OPEN))]
    at = 0
    while at < len(kept) and isinstance(kept[at], dict) and kept[at].get("role") in _LEADING:
        at += 1
    return [*kept[:at], {"role": "system", "content": block}, *kept[at:]]


class ContextService:
    """A `proxy.app.Service` and a `RequestHook`."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._store: EvolutionStore | None = None
        self._active: dict[str, tuple[ContextVersion | None, float]] = {}
        self._by_id: dict[tuple[str, str], ContextVersion] = {}
        self._reading: dict[str, asyncio.Future[ContextVersion | None]] = {}

    async def start(self, state: ProxyState) -> None:
        self._store = EvolutionStore(state.db)

    async def stop(self) -> None:
        self._store = None

    async def changed(self, _tenant: str | None = None) -> None:
        """After an in-process evolution: re-read the active version on the next request."""
        self._active.clear()

    async def active(self, tenant_id: str) -> ContextVersion | None:
        assert self._store is not None
        hit = self._active.get(tenant_id)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        # One read per tenant at a time: when the entry expires under load, every request
        # in flight would otherwise open its own connection for the same row.
        pending = self._reading.get(tenant_id)
        if pending is None:
            pending = asyncio.ensure_future(self._store.active_context(tenant_id))
            self._reading[tenant_id] = pending
            pending.add_done_callback(lambda _f: self._reading.pop(tenant_id, None))
        cv = await asyncio.shield(pending)
        self._active[tenant_id] = (cv, time.monotonic() + self.ttl_s)
        return cv

    async def _version(self, tenant_id: str, cid: str) -> ContextVersion | None:
        assert self._store is not None
        cv = self._by_id.get((tenant_id, cid))
        if cv is None:
            cv = next((c for c in await self._store.contexts(tenant_id) if c.id == cid), None)
            if cv is None:
                raise NotFound(f"no context version {cid!r}")
            self._by_id[(tenant_id, cid)] = cv
        return cv

    async def hook(self, ctx: TurnContext, body: dict[str, Any]) -> dict[str, Any]:
        """The `RequestHook`. An agent's turn whose context cannot be read goes up without
        it; a replay that cannot get the context it names fails (`Replay.unavailable`)."""
        replay = ctx.replay
        if self._store is None or (replay is None and ctx.session.turn_type != "main"):
            return body
        tenant_id = ctx.principal.tenant_id
        wanted = replay.context if replay is not None else None
        if wanted == NO_CONTEXT:
            return body
        try:
            cv = await self._version(tenant_id, wanted) if wanted else await self.active(tenant_id)
        except StoreError as exc:
            if replay is not None:
                raise replay.unavailable("context", exc) from exc
            return body
        if cv is None or not cv.text.strip():
            return body
        ctx.context_version = f"v{cv.version}"
        out = dict(body)
        out["messages"] = insert_context(list(body["messages"]), render_context_block(cv.text))
        return out
