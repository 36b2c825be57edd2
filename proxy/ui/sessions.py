"""/ui/sessions: the searchable list of recorded sessions and each session's transcript.

A global admin sees every tenant's sessions (or one, with `?tenant=`); a
tenant admin only its own: the store is asked for that tenant's rows, and a
session of another tenant is simply not found.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from proxy.deps import State
from proxy.ui.login import User
from proxy.ui.transcript import turn_views
from proxy.ui.web import UiRoute, page
from store.browse import search_sessions
from store.learning import session_outcomes

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)
PAGE_SIZE = 25


async def _tenant_id(state: State, name: str) -> str | None:
    ten = await state.keys.tenant_by_name(name)
    return ten.id if ten else None


@router.get("/sessions")
async def sessions(request: Request, state: State, user: User, q: str = "",
                   page_no: int = 1) -> Response:
    page_no = max(1, page_no)
    if user.is_global and user.asked is None:
        tenant_id: str | None = None  # every tenant
        rows, more = await search_sessions(state.db, tenant_id=None, query=q, limit=PAGE_SIZE,
                                           offset=(page_no - 1) * PAGE_SIZE)
    else:
        tenant_id = await _tenant_id(state, user.tenant)
        rows, more = ([], False) if tenant_id is None else await search_sessions(
            state.db, tenant_id=tenant_id, query=q, limit=PAGE_SIZE,
            offset=(page_no - 1) * PAGE_SIZE)
    return page(request, "sessions.jinja", {
        "user": user, "nav": "sessions", "rows": rows, "q": q, "page_no": page_no, "more": more,
        "all_tenants": user.is_global and user.asked is None,
    })


@router.get("/sessions/{session_id}")
async def transcript(request: Request, session_id: str, state: State, user: User) -> Response:
    # A global admin opens any tenant's session by its id; anyone else only their tenant's.
    tenant_id = None if user.is_global and user.asked is None else user.principal.tenant_id
    if user.asked is not None and user.is_global:
        tenant_id = await _tenant_id(state, user.tenant) or "-"
    detail = await state.trajectories.get_session(session_id, tenant_id=tenant_id)
    turns, on_session = turn_views(detail)
    outcome = (await session_outcomes(state.db, [detail.summary.id]))[detail.summary.id]
    return page(request, "session.jinja", {
        "user": user, "nav": "sessions", "s": detail.summary, "turns": turns,
        "session_feedback": on_session, "outcome": outcome,
    })
