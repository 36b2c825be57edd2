"""What the evolver keeps: per-tenant locks, evolution runs, skill proposals, context versions.

The lock is a row with an expiry, taken with one conditional write, so only
one evolution per tenant runs at a time across processes and machines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from store import tables as t
from store.database import Database
from store.errors import NotFound
from store.ids import new_id

PROPOSAL_STATUSES = ("pending", "accepted", "rejected", "invalid", "quarantined")


@dataclass(slots=True)
class Proposal:
    id: str
    tenant_id: str
    evolution_id: str | None
    created_at: float
    source: str
    status: str
    ops: list[dict[str, Any]]
    reason: str | None
    provenance: list[str] | None
    scores: dict[str, Any] | None
    revisions: list[str] | None


@dataclass(slots=True)
class ContextVersion:
    id: str
    tenant_id: str
    version: int
    parent: str | None
    text: str
    status: str
    scores: dict[str, Any] | None
    created_at: float


class EvolutionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- locks ---------------------------------------------------------------
    async def try_lock(self, tenant_id: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        lk = t.evolver_locks.c
        async with self.db.engine.begin() as conn:
            res = await conn.execute(
                t.evolver_locks.update()
                .where(lk.tenant_id == tenant_id, sa.or_(lk.expires_at < now, lk.holder == holder))
                .values(holder=holder, expires_at=now + ttl_s)
            )
            if res.rowcount:
                return True
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    t.evolver_locks.insert().values(tenant_id=tenant_id, holder=holder, expires_at=now + ttl_s)
                )
            return True
        except IntegrityError:
            return False

    async def unlock(self, tenant_id: str, holder: str) -> None:
        lk = t.evolver_locks.c
        async with self.db.engine.begin() as conn:
            await conn.execute(
                t.evolver_locks.delete().where(lk.tenant_id == tenant_id, lk.holder == holder)
            )

    # -- evolutions ----------------------------------------------------------
    async def start_evolution(self, tenant_id: str, trigger: str) -> str:
        eid = new_id("evo")
        async with self.db.engine.begin() as conn:
            await conn.execute(t.evolutions.insert().values(
                id=eid, tenant_id=tenant_id, started_at=time.time(), trigger=trigger, status="running"))
        return eid

    async def finish_evolution(self, eid: str, status: str, summary: dict[str, Any]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(t.evolutions.update().where(t.evolutions.c.id == eid).values(
                finished_at=time.time(), status=status, summary=summary))

    async def last_evolution_at(self, tenant_id: str) -> float:
        """When the last finished evolution of this tenant started (0 if none)."""
        e = t.evolutions.c
        async with self.db.engine.connect() as conn:
            v = (await conn.execute(
                sa.select(sa.func.max(e.started_at)).where(e.tenant_id == tenant_id, e.status != "running")
            )).scalar_one_or_none()
        return float(v or 0.0)

    async def evolutions(self, tenant_id: str, limit: int = 20) -> list[dict[str, Any]]:
        e = t.evolutions.c
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(t.evolutions).where(e.tenant_id == tenant_id).order_by(e.started_at.desc()).limit(limit)
            )).mappings().all()
        return [dict(r) for r in rows]

    # -- proposals -----------------------------------------------------------
    async def add_proposal(self, p: Proposal) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(t.proposals.insert().values(
                id=p.id, tenant_id=p.tenant_id, evolution_id=p.evolution_id, created_at=p.created_at,
                source=p.source, status=p.status, ops=p.ops, reason=p.reason,
                provenance=p.provenance, scores=p.scores, revisions=p.revisions))

    async def update_proposal(self, pid: str, **values: Any) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(t.proposals.update().where(t.proposals.c.id == pid).values(**values))

    async def proposal(self, pid: str) -> Proposal:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.proposals).where(t.proposals.c.id == pid))).mappings().first()
        if row is None:
            raise NotFound(f"no proposal {pid!r}")
        return Proposal(**dict(row))

    async def proposals(self, tenant_id: str, *, status: str | None = None, limit: int = 100) -> list[Proposal]:
        p = t.proposals.c
        stmt = sa.select(t.proposals).where(p.tenant_id == tenant_id)
        if status:
            stmt = stmt.where(p.status == status)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(p.created_at.desc()).limit(limit))).mappings().all()
        return [Proposal(**dict(r)) for r in rows]

    async def used_turns(self, tenant_id: str, *, limit: int = 1000) -> set[str]:
        """The turns the newest `limit` proposals of the tenant were drawn from (their provenance)."""
        p = t.proposals.c
        stmt = (sa.select(p.provenance).where(p.tenant_id == tenant_id)
                .order_by(p.created_at.desc()).limit(limit))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).scalars().all()
        return {str(turn) for prov in rows for turn in (prov or [])}

    # -- context versions ----------------------------------------------------
    async def add_context(self, tenant_id: str, text: str, *, parent: str | None, status: str,
                          scores: dict[str, Any] | None) -> ContextVersion:
        c = t.context_versions.c
        async with self.db.engine.begin() as conn:
            top = (await conn.execute(
                sa.select(sa.func.max(c.version)).where(c.tenant_id == tenant_id))).scalar_one_or_none()
            cv = ContextVersion(new_id("ctx"), tenant_id, int(top or 0) + 1, parent, text, status,
                                scores, time.time())
            if status == "active":
                await conn.execute(t.context_versions.update().where(
                    c.tenant_id == tenant_id, c.status == "active").values(status="retired"))
            await conn.execute(t.context_versions.insert().values(
                id=cv.id, tenant_id=tenant_id, version=cv.version, parent=parent, text=text,
                status=status, scores=scores, created_at=cv.created_at))
        return cv

    async def active_context(self, tenant_id: str) -> ContextVersion | None:
        c = t.context_versions.c
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.context_versions).where(
                c.tenant_id == tenant_id, c.status == "active"))).mappings().first()
        return ContextVersion(**dict(row)) if row else None

    async def contexts(self, tenant_id: str) -> list[ContextVersion]:
        c = t.context_versions.c
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.context_versions).where(
                c.tenant_id == tenant_id).order_by(c.version))).mappings().all()
        return [ContextVersion(**dict(r)) for r in rows]
