"""The TAFC request hook: think-augmented tools into requests that carry tools.

The effective settings of a tenant are the `[tafc]` section with the tenant's
overrides (`store/tenant_tafc.py`), re-read at most every `ttl_s`, so a change
made through `/admin/tenants/{tenant}/settings` serves within a second or two in
every process. The plan of what was added travels on the typed
`TurnContext.tafc`; the chat route strips exactly that from the answer.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.hooks import TurnContext
from proxy.state import ProxyState
from proxy.tafc import augment_tools
from store.database import Database
from store.errors import StoreError
from store.settings import TafcSettings
from store.tenant_tafc import read_tenant_tafc


class TafcService:
    """A `proxy.app.Service` and a `RequestHook`."""

    def __init__(self, settings: TafcSettings, ttl_s: float = 1.0) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._db: Database | None = None
        self._cache: dict[str, tuple[float, TafcSettings]] = {}

    async def start(self, state: ProxyState) -> None:
        self._db = state.db

    async def stop(self) -> None:
        self._db = None

    def changed(self, tenant_id: str | None = None) -> None:
        """Forget cached settings (this process serves a change at once)."""
        if tenant_id is None:
            self._cache.clear()
        else:
            self._cache.pop(tenant_id, None)

    async def effective(self, tenant_id: str) -> TafcSettings:
        hit = self._cache.get(tenant_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = self.settings
        if self._db is not None:
            try:
                value = await read_tenant_tafc(self._db, tenant_id, self.settings)
            except StoreError:
                value = hit[1] if hit is not None else self.settings
        self._cache[tenant_id] = (now, value)
        return value

    async def __call__(self, ctx: TurnContext, body: dict[str, Any]) -> dict[str, Any]:
        tools = body.get("tools")
        if not isinstance(tools, list) or not tools:
            return body
        cfg = await self.effective(ctx.principal.tenant_id)
        if cfg.mode == "off":
            return body
        augmented, plan = augment_tools(tools, cfg.mode, cfg.tau, cfg.tools or None)
        if not plan:
            return body
        ctx.tafc = plan
        return {**body, "tools": augmented}
