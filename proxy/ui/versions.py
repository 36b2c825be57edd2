"""/ui/versions: the tenant's weight-version registry, eval-gate figures, promote and roll back.

Promote and roll back call the `/admin/versions` route functions themselves,
so the same tenant check, artifact validation against the served base,
pointer flip and serving swap apply; their errors come back as a page.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response

from proxy.deps import State
from proxy.routes import admin_versions
from proxy.ui.login import User, checked_form
from proxy.ui.web import UiRoute, page, redirect
from store.registry import Registry, VersionMeta

router = APIRouter(prefix="/ui/versions", route_class=UiRoute, include_in_schema=False)


@dataclass(slots=True)
class BaseView:
    base: str
    active: str | None
    versions: list[VersionMeta]  # newest first
    history: list[dict[str, Any]]  # newest first


def _collect(reg: Registry, tenant: str) -> list[BaseView]:
    out = []
    for b in reg.bases(tenant):
        out.append(BaseView(b, reg.active(tenant, b), list(reversed(reg.versions(tenant, b))),
                            list(reversed(reg.history(tenant, b)))))
    return out


@router.get("")
async def versions(request: Request, state: State, user: User) -> Response:
    s = state.settings
    reg = Registry.from_settings(s)
    bases = await asyncio.to_thread(_collect, reg, user.tenant)
    done = {k: request.query_params.get(k) for k in ("action", "base", "active", "previous")}
    return page(request, "versions.jinja", {
        "user": user, "nav": "versions", "bases": bases,
        "done": done if done["action"] in ("promote", "rollback") else None,
    })


@router.post("/{base}/{version}/promote")
async def promote(request: Request, base: str, version: str, state: State,
                  user: User) -> Response:
    form = await checked_form(request, user)
    item = admin_versions.PromoteIn(reason=form.get("reason") or "promoted in the dashboard")
    out = await admin_versions.promote(user.tenant, base, version, state, user.principal, item)
    return redirect(user.link("/ui/versions", action="promote", base=base, active=out["active"],
                              previous=out["previous"]))


@router.post("/{base}/rollback")
async def rollback(request: Request, base: str, state: State, user: User) -> Response:
    form = await checked_form(request, user)
    item = admin_versions.RollbackIn(to=form.get("to") or None,
                                     reason=form.get("reason") or "rolled back in the dashboard")
    out = await admin_versions.rollback(user.tenant, base, state, user.principal, item)
    return redirect(user.link("/ui/versions", action="rollback", base=base, active=out["active"],
                              previous=out["previous"]))
