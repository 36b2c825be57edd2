"""FastAPI dependencies, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from proxy.auth import Principal
from proxy.state import ProxyState


def get_state(request: Request) -> ProxyState:
    state: ProxyState = request.app.state.molt
    return state


async def get_principal(request: Request) -> Principal:
    return await get_state(request).auth.authenticate(request.headers)


async def get_admin(request: Request, tenant: str | None = None) -> Principal:
    """An admin allowed to act on `tenant`: the route's `{tenant}` path or `?tenant=` query
    parameter (absent: the caller's own). A tenant admin naming another tenant gets 403
    here, before the route runs; routes still resolve the name with `admin.scope(tenant)`.
    """
    principal = await get_state(request).auth.require_admin(request.headers)
    principal.scope(tenant)
    return principal


State = Annotated[ProxyState, Depends(get_state)]
Caller = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(get_admin)]
