"""Tool description overlays: per-tenant rewrites of a tool parameter's description, versioned.

The evolver writes a rewrite as a `candidate` tied to its proposal (replays of
that proposal see it); the gate's verdict makes it `active` (the one served
for its tool and parameter; the one it replaces becomes `superseded`) or
`rejected`. Reverting an active overlay marks it `reverted` and brings back
the version it replaced, if any, as skills revert to their previous revision.
Every version stays in the table: the history of what was served, and why;
each turn records the versions that served it (the turns' `tool_overlays`).

`param` is a parameter path (``address.city``, read through `$ref`, `anyOf`/
`oneOf`/`allOf` and array items: store/param_paths.py);
`base` is the agent's own description the rewrite was written for (None: the
parameter had none). Serving lays a rewrite only over that same base, so an
agent that changes its schema gets its own words back (store/tool_params.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from store import tables as t
from store.database import Database
from store.errors import InvalidInput, NotFound
from store.ids import new_id

CANDIDATE, ACTIVE, SUPERSEDED, REVERTED, REJECTED = (
    "candidate", "active", "superseded", "reverted", "rejected")


@dataclass(frozen=True)
class ToolOverlay:
    id: str
    tenant_id: str
    tool: str
    param: str
    version: int
    base: str | None
    description: str
    status: str
    proposal_id: str | None
    reason: str | None
    created_at: float
    changed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(r: Any) -> ToolOverlay:
    return ToolOverlay(**dict(r))


class ToolOverlayStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_candidate(self, tenant_id: str, tool: str, param: str, description: str, *,
                            base: str | None, proposal_id: str | None, reason: str | None) -> ToolOverlay:
        """A new version for (tool, param), not served until `activate`."""
        c = t.tool_overlays.c
        async with self.db.engine.begin() as conn:
            top = (await conn.execute(sa.select(sa.func.max(c.version)).where(
                c.tenant_id == tenant_id, c.tool == tool, c.param == param))).scalar_one_or_none()
            ov = ToolOverlay(new_id("tov"), tenant_id, tool, param, int(top or 0) + 1, base, description,
                             CANDIDATE, proposal_id, reason, time.time())
            await conn.execute(t.tool_overlays.insert().values(**ov.as_dict()))
        return ov

    async def get(self, overlay_id: str) -> ToolOverlay:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.tool_overlays).where(
                t.tool_overlays.c.id == overlay_id))).mappings().first()
        if row is None:
            raise NotFound(f"no tool overlay {overlay_id!r}")
        return _row(row)

    async def for_proposal(self, proposal_id: str) -> list[ToolOverlay]:
        c = t.tool_overlays.c
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.tool_overlays).where(
                c.proposal_id == proposal_id).order_by(c.tool, c.param))).mappings().all()
        return [_row(r) for r in rows]

    async def active(self, tenant_id: str) -> list[ToolOverlay]:
        return await self.overlays(tenant_id, status=ACTIVE)

    async def overlays(self, tenant_id: str, *, status: str | None = None,
                   tool: str | None = None) -> list[ToolOverlay]:
        c = t.tool_overlays.c
        q = sa.select(t.tool_overlays).where(c.tenant_id == tenant_id)
        if status is not None:
            q = q.where(c.status == status)
        if tool is not None:
            q = q.where(c.tool == tool)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(c.tool, c.param, c.version))).mappings().all()
        return [_row(r) for r in rows]

    async def _set(self, conn: Any, ids: list[str], status: str) -> None:
        if ids:
            await conn.execute(t.tool_overlays.update().where(t.tool_overlays.c.id.in_(ids)).values(
                status=status, changed_at=time.time()))

    async def activate(self, overlay_id: str) -> ToolOverlay:
        """Serve a candidate; the version it replaces becomes `superseded`."""
        ov = await self.get(overlay_id)
        if ov.status != CANDIDATE:
            raise InvalidInput(f"tool overlay {overlay_id!r} is {ov.status}, not a candidate")
        c = t.tool_overlays.c
        async with self.db.engine.begin() as conn:
            prev = (await conn.execute(sa.select(c.id).where(
                c.tenant_id == ov.tenant_id, c.tool == ov.tool, c.param == ov.param,
                c.status == ACTIVE))).scalars().all()
            await self._set(conn, list(prev), SUPERSEDED)
            await self._set(conn, [ov.id], ACTIVE)
        return await self.get(overlay_id)

    async def reject(self, overlay_ids: list[str]) -> None:
        async with self.db.engine.begin() as conn:
            await self._set(conn, overlay_ids, REJECTED)

    async def revert(self, tenant_id: str, overlay_id: str) -> tuple[ToolOverlay, ToolOverlay | None]:
        """Stop serving an active overlay; the newest version it superseded is served again.

        Answers (the reverted overlay, the one restored or None: the agent's own description)."""
        ov = await self.get(overlay_id)
        if ov.tenant_id != tenant_id:
            raise NotFound(f"no tool overlay {overlay_id!r} for this tenant")
        if ov.status != ACTIVE:
            raise InvalidInput(f"tool overlay {overlay_id!r} is {ov.status}; only an active one reverts")
        c = t.tool_overlays.c
        async with self.db.engine.begin() as conn:
            await self._set(conn, [ov.id], REVERTED)
            prev = (await conn.execute(sa.select(c.id).where(
                c.tenant_id == tenant_id, c.tool == ov.tool, c.param == ov.param,
                c.status == SUPERSEDED, c.version < ov.version).order_by(c.version.desc()))).scalars().first()
            if prev is not None:
                await self._set(conn, [prev], ACTIVE)
        return await self.get(overlay_id), (await self.get(prev) if prev is not None else None)
