"""/admin/tenants/{tenant}/settings: a tenant's serving settings (today: TAFC).

GET answers the effective settings (the process-wide section with the tenant's
overrides); PUT merges `{"tafc": {...}}` into the tenant's stored overrides,
validated first. A tenant admin reaches only its own tenant (proxy/deps.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from proxy.deps import Admin, State
from proxy.errors import InvalidRequest, NotFoundError
from proxy.state import ProxyState
from proxy.tafc_injection import TafcService
from store.errors import InvalidInput, NotFound
from store.keys import KeyStore
from store.tenant_tafc import read_tenant_tafc, write_tenant_tafc


class TenantSettingsIn(BaseModel):
    tafc: dict[str, Any] | None = None


async def _tenant_id(state: ProxyState, name: str) -> str:
    t = await KeyStore(state.db).tenant_by_name(name)
    if t is None:
        raise NotFoundError(f"no tenant {name!r}")
    return t.id


def build_router(tafc: Callable[[], TafcService]) -> APIRouter:
    router = APIRouter(prefix="/admin/tenants", tags=["admin"])

    @router.get("/{tenant}/settings")
    async def show(tenant: str, state: State, admin: Admin) -> dict[str, Any]:
        name = admin.scope(tenant)
        tid = await _tenant_id(state, name)
        eff = await read_tenant_tafc(state.db, tid, state.settings.tafc)
        return {"tenant": name, "tafc": eff.model_dump()}

    @router.put("/{tenant}/settings")
    async def update(tenant: str, item: TenantSettingsIn, state: State,
                     admin: Admin) -> dict[str, Any]:
        name = admin.scope(tenant)
        tid = await _tenant_id(state, name)
        eff = await read_tenant_tafc(state.db, tid, state.settings.tafc)
        if item.tafc is not None:
            try:
                eff = await write_tenant_tafc(state.db, tid, item.tafc, state.settings.tafc)
            except InvalidInput as exc:
                raise InvalidRequest(str(exc), param="tafc", code="invalid_setting") from exc
            except NotFound as exc:
                raise NotFoundError(str(exc)) from exc
            tafc().changed(tid)
        return {"tenant": name, "tafc": eff.model_dump()}

    return router
