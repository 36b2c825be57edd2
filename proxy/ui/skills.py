"""/ui/skills: the tenant's skill library: list, view, edit, history, revert, review.

Every change goes through the same `SkillLibrary` calls as `/admin/skills`
(validation, revisions, the generation, quarantine rules) and then tells the
running skills service, so the next request serves it. Reviewing a
quarantined evolver skill shows the turns that motivated it (its provenance)
and the validation gate's figures from the evolver's proposal; approving makes
it active, rejecting restores the last revision that was not quarantined (or
retires the skill if there is none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response

from proxy.deps import State
from proxy.errors import InvalidRequest
from proxy.routes.admin_skills import Provider
from proxy.state import ProxyState
from proxy.ui.login import UiUser, User, checked_form
from proxy.ui.transcript import tool_call_views
from proxy.ui.web import UiRoute, page, redirect
from store.browse import skill_usage
from store.errors import NotFound
from store.evolution import EvolutionStore, Proposal
from store.skills.errors import SkillFileError
from store.skills.revisions import Revision

AUTHOR = "admin-ui"
MAX_PROVENANCE = 20


@dataclass(slots=True)
class Motivation:
    """A turn a skill was written from, as the reviewer needs to see it."""

    id: str
    found: bool
    session_id: str | None = None
    created_at: float | None = None
    status: str | None = None
    asked: str = ""  # the last user (or tool) message the model answered
    answer: str = ""
    calls: list[dict[str, str]] | None = None
    feedback: list[dict[str, Any]] | None = None


def _last_input(request: object) -> str:
    msgs = request.get("messages") if isinstance(request, dict) else None
    for m in reversed(msgs if isinstance(msgs, list) else []):
        if isinstance(m, dict) and m.get("role") in ("user", "tool"):
            c = m.get("content")
            return c if isinstance(c, str) else str(c)
    return ""


async def _motivations(state: ProxyState, tenant_id: str, ids: list[str]) -> list[Motivation]:
    out: list[Motivation] = []
    fb: dict[str, list[dict[str, Any]]] = {}
    for f in await state.feedback.for_turns(ids[:MAX_PROVENANCE]):
        fb.setdefault(str(f["turn_id"]), []).append(f)
    for tid in ids[:MAX_PROVENANCE]:
        try:
            row = await state.trajectories.get_turn(tid, tenant_id=tenant_id)
        except NotFound:
            out.append(Motivation(tid, False))
            continue
        out.append(Motivation(
            tid, True, str(row["session_id"]), row["created_at"], row["status"],
            _last_input(row["request"]), row.get("content") or "",
            tool_call_views(row.get("tool_calls")), fb.get(tid, []),
        ))
    return out


def _proposals_for(proposals: list[Proposal], name: str, revs: set[str]) -> list[Proposal]:
    return [p for p in proposals
            if revs.intersection(p.revisions or [])
            or any(op.get("name") == name for op in p.ops if isinstance(op, dict))]


def build_router(get: Callable[[], Provider]) -> APIRouter:
    router = APIRouter(prefix="/ui/skills", route_class=UiRoute, include_in_schema=False)

    async def _tenant_id(state: ProxyState, user: UiUser) -> str:
        return (await get().library.tenant(user.tenant)).id

    @router.get("")
    async def list_skills(request: Request, state: State, user: User,
                          status: str = "") -> Response:
        lib = get().library
        await lib.ensure_seeded(user.tenant)
        skills = await lib.current(user.tenant)
        usage = await skill_usage(state.db, await _tenant_id(state, user))
        rows = [s for s in skills.values() if not status or s.skill.status == status]
        held = [s for s in skills.values() if s.skill.status == "quarantined"]
        return page(request, "skills.jinja", {
            "user": user, "nav": "skills", "skills": rows, "usage": usage, "status": status,
            "generation": await lib.generation(user.tenant), "held": held,
        })

    async def _show(request: Request, state: State, user: UiUser, name: str, *,
                    tab: str, draft: str | None = None, error: str | None = None,
                    status: int = 200) -> Response:
        lib = get().library
        s = await lib.get(user.tenant, name)
        history = await lib.history(user.tenant, name)
        current = await lib.revision(user.tenant, s.revision)
        ctx: dict[str, Any] = {
            "user": user, "nav": "skills", "s": s, "content": current.content or "",
            "history": list(reversed(history)), "tab": tab, "draft": draft, "error": error,
            "saved": request.query_params.get("saved"), "motivations": [], "proposals": [],
        }
        if s.skill.status == "quarantined" or tab == "review":
            tid = await _tenant_id(state, user)
            revs = {r.id for r in history}
            props = _proposals_for(await EvolutionStore(state.db).proposals(tid, limit=200),
                                   name, revs)
            ids = list(dict.fromkeys([*s.skill.provenance,
                                      *[t for p in props for t in p.provenance or []]]))
            ctx["proposals"] = props
            ctx["motivations"] = await _motivations(state, tid, ids)
        return page(request, "skill.jinja", ctx, status=status)

    @router.get("/{name}")
    async def show(request: Request, name: str, state: State, user: User) -> Response:
        return await _show(request, state, user, name, tab="view")

    @router.get("/{name}/edit")
    async def edit_form(request: Request, name: str, state: State, user: User) -> Response:
        return await _show(request, state, user, name, tab="edit")

    @router.get("/{name}/history")
    async def history(request: Request, name: str, state: State, user: User) -> Response:
        return await _show(request, state, user, name, tab="history")

    @router.post("/{name}/edit")
    async def save(request: Request, name: str, state: State, user: User) -> Response:
        form = await checked_form(request, user)
        text = form.get("content", "").replace("\r\n", "\n")
        reason = form.get("reason", "").strip() or None
        try:
            rev = await get().library.update_text(user.tenant, name, text, author=AUTHOR,
                                                  reason=reason)
        except SkillFileError as exc:
            # Keep what the person typed: show it again with the problem.
            return await _show(request, state, user, name, tab="edit", draft=text,
                               error=str(exc), status=400)
        await get().changed(user.tenant)
        saved = rev.id if rev is not None else "unchanged"
        return redirect(user.link(f"/ui/skills/{name}/history", saved=saved))

    async def _after(user: UiUser, name: str, rev: Revision | None) -> Response:
        await get().changed(user.tenant)
        return redirect(user.link(f"/ui/skills/{name}/history",
                                  saved=rev.id if rev is not None else "unchanged"))

    @router.post("/{name}/revert")
    async def revert(request: Request, name: str, user: User) -> Response:
        form = await checked_form(request, user)
        rev = await get().library.revert(user.tenant, name, form.get("revision", ""),
                                         author=AUTHOR, reason=form.get("reason") or None)
        return await _after(user, name, rev)

    @router.post("/{name}/approve")
    async def approve(request: Request, name: str, user: User) -> Response:
        form = await checked_form(request, user)
        rev = await get().library.approve(user.tenant, name, author=AUTHOR,
                                          reason=form.get("reason") or "approved in the dashboard")
        return await _after(user, name, rev)

    @router.post("/{name}/reject")
    async def reject(request: Request, name: str, user: User) -> Response:
        form = await checked_form(request, user)
        lib = get().library
        reason = form.get("reason") or "rejected in the dashboard"
        cur = await lib.get(user.tenant, name)
        if cur.skill.status != "quarantined":
            raise InvalidRequest(f"skill {name!r} is {cur.skill.status}, not quarantined")
        earlier = [r for r in await lib.history(user.tenant, name)
                   if r.content is not None and r.status == "active"]
        if earlier:
            rev = await lib.revert(user.tenant, name, earlier[-1].id, author=AUTHOR,
                                   reason=reason)
        else:
            rev = await lib.retire(user.tenant, name, author=AUTHOR, reason=reason)
        return await _after(user, name, rev)

    return router
