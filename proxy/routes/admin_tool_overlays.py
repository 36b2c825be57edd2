"""/admin/tools/overlays: the tool description rewrites served per tenant, and reverting one.

GET lists a tenant's overlays, every version (`?status=active` for what is
served, `?tool=` for one tool); POST `/{id}/revert` stops serving an active
overlay and serves the version it replaced again (or the agent's own
description). A tenant admin reaches only its own tenant (proxy/deps.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter

from proxy.deps import Admin, State
from proxy.errors import InvalidRequest, NotFoundError
from proxy.state import ProxyState
from store.errors import InvalidInput, NotFound
from store.keys import KeyStore
from store.tool_overlays import ToolOverlayStore


async def _tenant_id(state: ProxyState, name: str) -> str:
    t = await KeyStore(state.db).tenant_by_name(name)
    if t is None:
        raise NotFoundError(f"no tenant {name!r}")
    return t.id


def build_router(changed: Callable[[str], Awaitable[None]]) -> APIRouter:
    router = APIRouter(prefix="/admin/tools", tags=["admin"])

    @router.get("/overlays")
    async def listing(state: State, admin: Admin, tenant: str | None = None,
                      status: str | None = None, tool: str | None = None) -> dict[str, Any]:
        name = admin.scope(tenant)
        tid = await _tenant_id(state, name)
        rows = await ToolOverlayStore(state.db).overlays(tid, status=status, tool=tool)
        return {"object": "list", "tenant": name, "data": [o.as_dict() for o in rows]}

    @router.post("/overlays/{overlay_id}/revert")
    async def revert(overlay_id: str, state: State, admin: Admin,
                     tenant: str | None = None) -> dict[str, Any]:
        name = admin.scope(tenant)
        tid = await _tenant_id(state, name)
        try:
            reverted, restored = await ToolOverlayStore(state.db).revert(tid, overlay_id)
        except NotFound as exc:
            raise NotFoundError(str(exc)) from exc
        except InvalidInput as exc:
            raise InvalidRequest(str(exc), param="overlay_id", code="invalid_state") from exc
        await changed(name)
        return {"tenant": name, "reverted": reverted.as_dict(),
                "restored": restored.as_dict() if restored else None}

    return router
