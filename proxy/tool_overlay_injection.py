"""The tool overlay request hook: the tenant's served description rewrites into the request's tools.

Runs before the TAFC hook, so a think-augmented schema carries the rewritten
descriptions too, and on every route (each adapter hands `proxy.turn_flow`
the Chat Completions form of its tools). A tenant's active overlays
(`store/tool_overlays.py`) are re-read at most every `ttl_s`, so a revert
through `/admin/tools/overlays` or the CLI serves within a second or two in
every process (`changed` serves it at once in this one). An evolver replay of
a proposal (`X-Molt-Replay: <proposal id>`) gets that proposal's candidate
rewrites laid over the active ones; a replay of `current` gets the active
ones. A store failure never fails an agent's request: the tools go up as the
agent sent them.

The turn records the overlay versions that served it (`TurnContext.tool_overlays`,
the turns' `tool_overlays` column: ``[{id, version, tool, param}]``): those
laid over its tools, [] when none applied.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from proxy.hooks import TurnContext
from proxy.state import ProxyState
from store.tool_overlays import CANDIDATE, ToolOverlay, ToolOverlayStore
from store.tool_params import Rewrite, apply_rewrites

log = logging.getLogger("molt.tool_overlays")


def _rewrites(overlays: list[ToolOverlay]) -> list[Rewrite]:
    return [Rewrite(o.tool, o.param, o.description, o.base, o.id, o.version) for o in overlays]


class ToolOverlayService:
    """A `proxy.app.Service` and a `RequestHook`."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._store: ToolOverlayStore | None = None
        self._cache: dict[str, tuple[float, list[Rewrite]]] = {}

    async def start(self, state: ProxyState) -> None:
        self._store = ToolOverlayStore(state.db)

    async def stop(self) -> None:
        self._store = None

    async def changed(self, tenant: str | None = None) -> None:
        """Forget cached overlays (this process serves a change at once); `tenant` unused: all go."""
        self._cache.clear()

    async def active(self, tenant_id: str) -> list[Rewrite]:
        hit = self._cache.get(tenant_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        if self._store is None:
            return []
        try:
            value = _rewrites(await self._store.active(tenant_id))
        except Exception as exc:  # noqa: BLE001 - a store failure never fails an agent's request
            log.warning("tool overlays unavailable: %s", type(exc).__name__)
            value = hit[1] if hit is not None else []
        self._cache[tenant_id] = (now, value)
        return value

    async def _candidate(self, tenant_id: str, proposal_id: str) -> list[Rewrite]:
        if self._store is None:
            return []
        try:
            found = await self._store.for_proposal(proposal_id)
        except Exception:  # noqa: BLE001 - the replay then compares the active overlays
            return []
        return _rewrites([o for o in found if o.tenant_id == tenant_id and o.status == CANDIDATE])

    async def __call__(self, ctx: TurnContext, body: dict[str, Any]) -> dict[str, Any]:
        ctx.tool_overlays = []
        tools = body.get("tools")
        if not isinstance(tools, list) or not tools:
            return body
        tenant_id = ctx.principal.tenant_id
        rewrites = await self.active(tenant_id)
        if ctx.replay is not None and ctx.replay.proposal is not None:
            cand = await self._candidate(tenant_id, ctx.replay.proposal)
            shadowed = {(r.tool, r.param) for r in cand}
            rewrites = [r for r in rewrites if (r.tool, r.param) not in shadowed] + cand
        if not rewrites:
            return body
        new, applied = apply_rewrites(tools, rewrites)
        if not applied:
            return body
        ctx.tool_overlays = [r.served() for r in applied]
        return {**body, "tools": new}
