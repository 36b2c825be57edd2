"""/admin/versions: the weight-version registry over REST (admin only).

A tenant admin sees and changes only its own tenant's versions (403 for
another); a global admin lists every tenant's.

Promotion and rollback validate the artifact against the base weights that
serve it (the same `Registry.promote` the CLI and the trainer call), flip the
`active` pointer, then ask every backend serving that base to swap now; the
answer says which version each alias serves afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from proxy.deps import Admin, State
from proxy.errors import InvalidRequest, NotFoundError, ProxyError
from proxy.state import ProxyState
from proxy.upstream.versioned import VersionedBackend
from store.errors import Conflict, NotFound, StoreError
from store.registry import Promotion, Registry, served_base_dirs

router = APIRouter(prefix="/admin/versions", tags=["admin"])


class RollbackIn(BaseModel):
    to: str | None = None
    reason: str | None = None


class PromoteIn(BaseModel):
    reason: str | None = None


def _registry(state: ProxyState) -> Registry:
    s = state.settings
    return Registry.from_settings(s)


def _translate(exc: StoreError) -> ProxyError:
    if isinstance(exc, NotFound):
        return NotFoundError(str(exc), code="not_found")
    if isinstance(exc, Conflict):
        return ProxyError(str(exc), status=409, type="invalid_request_error", code="conflict")
    return InvalidRequest(str(exc), code="invalid_version")


async def sync_served(state: ProxyState, tenant: str, base: str) -> dict[str, str]:
    """Ask every backend serving `base` to swap to the tenant's active version now, without
    waiting for its registry poll; {alias: the version it now serves}."""
    served: dict[str, str] = {}
    backends = [b for b in state.upstreams.backends() if isinstance(b, VersionedBackend)]
    for b in backends:
        if b.base_name == base:
            version = await b.sync_versions(tenant)
            for alias in state.upstreams.aliases():
                if state.upstreams.backend_of(alias) is b:
                    served[alias] = version
    return served


def _promotion(p: Promotion, served: dict[str, str]) -> dict[str, Any]:
    return {"tenant": p.tenant, "base": p.base, "action": p.action, "previous": p.previous,
            "active": p.active, "served": served}


@router.get("")
async def list_versions(state: State, _admin: Admin, tenant: str | None = None,
                        base: str | None = None) -> dict[str, Any]:
    reg = _registry(state)
    only = _admin.scope(tenant) if tenant or not _admin.is_global else None

    def collect() -> list[dict[str, Any]]:
        out = []
        for t in [only] if only else reg.tenants():
            for b in [base] if base else reg.bases(t):
                out.append({"tenant": t, "base": b, "active": reg.active(t, b),
                            "versions": [m.to_dict() for m in reg.versions(t, b)]})
        return out

    try:
        return {"object": "list", "data": await asyncio.to_thread(collect)}
    except StoreError as exc:
        raise _translate(exc) from exc


@router.get("/{tenant}/{base}/{version}")
async def show_version(tenant: str, base: str, version: str, state: State,
                       _admin: Admin) -> dict[str, Any]:
    tenant = _admin.scope(tenant)
    try:
        return (await asyncio.to_thread(_registry(state).get, tenant, base, version)).to_dict()
    except StoreError as exc:
        raise _translate(exc) from exc


@router.post("/{tenant}/{base}/{version}/promote")
async def promote(tenant: str, base: str, version: str, state: State, _admin: Admin,
                  item: PromoteIn | None = None) -> dict[str, Any]:
    tenant = _admin.scope(tenant)
    base_dir = served_base_dirs(state.settings.models).get(base)
    reg = _registry(state)
    try:
        p = await asyncio.to_thread(reg.promote, tenant, base, version, base_dir=base_dir,
                                    reason=item.reason if item else None)
    except StoreError as exc:
        raise _translate(exc) from exc
    return _promotion(p, await sync_served(state, tenant, base))


@router.post("/{tenant}/{base}/rollback")
async def rollback(tenant: str, base: str, state: State, _admin: Admin,
                   item: RollbackIn | None = None) -> dict[str, Any]:
    tenant = _admin.scope(tenant)
    base_dir = served_base_dirs(state.settings.models).get(base)
    reg = _registry(state)
    try:
        p = await asyncio.to_thread(reg.rollback, tenant, base, item.to if item else None,
                                    base_dir=base_dir, reason=item.reason if item else None)
    except StoreError as exc:
        raise _translate(exc) from exc
    return _promotion(p, await sync_served(state, tenant, base))


@router.delete("/{tenant}/{base}/{version}")
async def remove(tenant: str, base: str, version: str, state: State,
                 _admin: Admin) -> dict[str, Any]:
    tenant = _admin.scope(tenant)
    try:
        await asyncio.to_thread(_registry(state).remove, tenant, base, version)
    except StoreError as exc:
        raise _translate(exc) from exc
    return {"deleted": True, "tenant": tenant, "base": base, "version": version}
