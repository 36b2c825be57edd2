"""Read-only views for people browsing the store: session search, tenants, skill usage.

Every query takes the tenant to look in (None only for a caller allowed to
see every tenant) and pages with limit + offset, so a page costs the same
however much has been recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from store import tables as t
from store.database import Database
from store.learning import Outcome, session_outcomes


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    tenant: str
    external_id: str | None
    started_at: float
    last_turn_at: float
    turns: int
    done: bool
    model: str | None  # the model the last turn asked for
    weight_version: str | None  # what served the last turn (None: the base weights)
    skill_generation: int | None
    errors: int  # turns whose status is not ok
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class SkillUsage:
    turns: int  # turns this skill was injected into
    last_used: float | None


async def tenant_names(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(t.tenants.c.name).order_by(t.tenants.c.name))).all()
    return [str(r[0]) for r in rows]


async def search_sessions(
    db: Database, *, tenant_id: str | None, query: str = "", limit: int = 50, offset: int = 0,
) -> tuple[list[SessionRow], bool]:
    """A page of sessions, newest first, and whether there are more.

    `query` matches (case-insensitively, as plain text) the session id, its
    external id, the tenant's name or a model any of its turns asked for.
    """
    s, tc, tn = t.sessions.c, t.turns.c, t.tenants.c
    stmt = sa.select(s.id, tn.name, s.tenant_id, s.external_id, s.started_at, s.last_turn_at,
                     s.turn_count, s.done).outerjoin(t.tenants, tn.id == s.tenant_id)
    if tenant_id is not None:
        stmt = stmt.where(s.tenant_id == tenant_id)
    q = query.strip().lower()
    if q:
        model_hit = sa.select(tc.id).where(
            tc.session_id == s.id, sa.func.lower(tc.request_model).contains(q, autoescape=True)
        ).exists()
        stmt = stmt.where(sa.or_(
            sa.func.lower(s.id).contains(q, autoescape=True),
            sa.func.lower(s.external_id).contains(q, autoescape=True),
            sa.func.lower(tn.name).contains(q, autoescape=True),
            model_hit,
        ))
    stmt = stmt.order_by(s.last_turn_at.desc(), s.id.desc()).limit(limit + 1).offset(offset)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [str(r[0]) for r in rows]
        last: dict[str, tuple[object, ...]] = {}
        errors: dict[str, int] = {}
        if ids:
            turn_rows = (await conn.execute(
                sa.select(tc.session_id, tc.idx, tc.request_model, tc.weight_version,
                          tc.skill_generation, tc.status)
                .where(tc.session_id.in_(ids)).order_by(tc.session_id, tc.idx)
            )).all()
            for tr in turn_rows:
                sid = str(tr[0])
                last[sid] = tuple(tr)
                if tr[5] != "ok":
                    errors[sid] = errors.get(sid, 0) + 1
    outcomes = await session_outcomes(db, ids)
    out: list[SessionRow] = []
    for sid_, tname, tid, ext, started, last_at, count, done in rows:
        sid = str(sid_)
        lt = last.get(sid)
        gen = None if lt is None else lt[4]
        out.append(SessionRow(
            id=sid, tenant=str(tname or tid), external_id=None if ext is None else str(ext),
            started_at=float(started), last_turn_at=float(last_at),
            turns=int(count), done=bool(done),
            model=None if lt is None else str(lt[2]),
            weight_version=None if lt is None or lt[3] is None else str(lt[3]),
            skill_generation=gen if isinstance(gen, int) else None,
            errors=errors.get(sid, 0), outcome=outcomes[sid],
        ))
    return out, more


async def skill_usage(db: Database, tenant_id: str) -> dict[str, SkillUsage]:
    """How many turns each skill was injected into (`turns.injected_skills`), by skill name."""
    if db.dialect == "postgresql":
        sql = sa.text(
            "SELECT e.value->>'id' AS name, count(*), max(turns.created_at) FROM turns, "
            "json_array_elements(CASE WHEN json_typeof(turns.injected_skills) = 'array' "
            "THEN turns.injected_skills ELSE '[]'::json END) AS e(value) "
            "WHERE turns.tenant_id = :tid GROUP BY 1"
        )
    else:
        sql = sa.text(
            "SELECT json_extract(e.value, '$.id') AS name, count(*), max(turns.created_at) "
            "FROM turns, json_each(CASE WHEN json_type(turns.injected_skills) = 'array' "
            "THEN turns.injected_skills ELSE '[]' END) AS e "
            "WHERE turns.tenant_id = :tid GROUP BY 1"
        )
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sql, {"tid": tenant_id})).all()
    return {str(name): SkillUsage(int(n), float(at) if at is not None else None)
            for name, n, at in rows if name is not None}
