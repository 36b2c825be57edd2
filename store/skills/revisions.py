"""Skill revisions and the per-tenant skill generation, in the database.

Every change to a tenant's library is one row of `skill_revisions`: the full
SKILL.md text after the change (None for a delete), its SHA-256, a unified
diff against the previous revision, who made it and why. The generation
counter in `skill_state` rises, in the same transaction, with every change
that reaches serving (a skill that was or becomes `active`), so every turn
can be stamped with the generation it was served under (MetaClaw's
support/query separation).
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from store import tables as t
from store.database import Database
from store.ids import new_id
from store.skills.errors import SkillNotFound
from store.skills.skillfile import FILE_NAME, content_hash

ACTIONS = ("add", "update", "merge", "retire", "delete", "revert", "approve", "import", "disk", "seed")


@dataclass(frozen=True, slots=True)
class Revision:
    id: str
    tenant_id: str
    name: str
    action: str
    status: str | None
    content: str | None
    content_hash: str | None
    diff: str
    author: str
    reason: str | None
    provenance: list[str] | None
    generation: int
    created_at: float

    @property
    def deleted(self) -> bool:
        return self.content is None

    def as_dict(self, *, with_content: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "name": self.name, "action": self.action, "status": self.status,
            "content_hash": self.content_hash, "author": self.author, "reason": self.reason,
            "provenance": self.provenance, "generation": self.generation,
            "created_at": self.created_at,
        }
        if with_content:
            out["content"] = self.content
            out["diff"] = self.diff
        return out


def unified_diff(old: str | None, new: str | None, name: str) -> str:
    a = (old or "").splitlines(keepends=True)
    b = (new or "").splitlines(keepends=True)
    label = f"{name}/{FILE_NAME}"
    return "".join(difflib.unified_diff(
        a, b, fromfile=f"a/{label}" if old is not None else "/dev/null",
        tofile=f"b/{label}" if new is not None else "/dev/null",
    ))


def _row(r: Any) -> Revision:
    return Revision(
        r.id, r.tenant_id, r.name, r.action, r.status, r.content, r.content_hash, r.diff,
        r.author, r.reason, r.provenance, r.generation, r.created_at,
    )


class RevisionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def generation(self, tenant_id: str) -> int:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(t.skill_state.c.generation).where(t.skill_state.c.tenant_id == tenant_id)
            )).first()
        return int(row[0]) if row else 0

    async def generations(self) -> dict[str, int]:
        """Every tenant's generation, in one query (what a proxy polls)."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(t.skill_state.c.tenant_id, t.skill_state.c.generation)
            )).all()
        return {r[0]: int(r[1]) for r in rows}

    async def is_seeded(self, tenant_id: str) -> bool:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(t.skill_state.c.seeded_at).where(t.skill_state.c.tenant_id == tenant_id)
            )).first()
        return row is not None and row[0] is not None

    async def mark_seeded(self, tenant_id: str) -> None:
        async with self.db.engine.begin() as conn:
            await self._ensure_state(conn, tenant_id)
            await conn.execute(
                t.skill_state.update().where(t.skill_state.c.tenant_id == tenant_id)
                .values(seeded_at=time.time())
            )

    async def _ensure_state(self, conn: AsyncConnection, tenant_id: str) -> None:
        row = (await conn.execute(
            sa.select(t.skill_state.c.tenant_id).where(t.skill_state.c.tenant_id == tenant_id)
        )).first()
        if row is None:
            await conn.execute(t.skill_state.insert().values(
                tenant_id=tenant_id, generation=0, seeded_at=None, updated_at=time.time()
            ))

    async def latest(self, tenant_id: str) -> dict[str, Revision]:
        """The newest revision of every skill this tenant ever had, by name."""
        r = t.skill_revisions.c
        newest = (
            sa.select(sa.func.max(r.id)).where(r.tenant_id == tenant_id).group_by(r.name)
        ).scalar_subquery()
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(t.skill_revisions).where(r.tenant_id == tenant_id, r.id.in_(newest))
            )).all()
        return {row.name: _row(row) for row in rows}

    async def latest_of(self, tenant_id: str, name: str) -> Revision | None:
        r = t.skill_revisions.c
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(t.skill_revisions).where(r.tenant_id == tenant_id, r.name == name)
                .order_by(r.id.desc()).limit(1)
            )).first()
        return _row(row) if row else None

    async def history(self, tenant_id: str, name: str | None = None) -> list[Revision]:
        """Revisions, oldest first: of one skill, or of the whole library."""
        r = t.skill_revisions.c
        stmt = sa.select(t.skill_revisions).where(r.tenant_id == tenant_id)
        if name is not None:
            stmt = stmt.where(r.name == name)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(r.id))).all()
        return [_row(row) for row in rows]

    async def get(self, tenant_id: str, rev: str) -> Revision:
        """A revision by id, or by a unique prefix of its id (`srev_0191c`)."""
        r = t.skill_revisions.c
        cond = r.id == rev if len(rev) >= 37 else r.id.like(f"{_escape(rev)}%", escape="\\")
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(t.skill_revisions).where(r.tenant_id == tenant_id, cond).limit(2)
            )).all()
        if not rows:
            raise SkillNotFound(f"no skill revision {rev!r}")
        if len(rows) > 1:
            raise SkillNotFound(f"{rev!r} matches several revisions; give more of the id")
        return _row(rows[0])

    async def record(
        self,
        tenant_id: str,
        name: str,
        *,
        action: str,
        status: str | None,
        content: str | None,
        author: str,
        reason: str | None,
        provenance: list[str] | None,
        serving_change: bool,
    ) -> Revision:
        """Append a revision (and bump the generation when serving changes), atomically."""
        r = t.skill_revisions.c
        async with self.db.engine.begin() as conn:
            await self._ensure_state(conn, tenant_id)
            if serving_change:
                await conn.execute(
                    t.skill_state.update().where(t.skill_state.c.tenant_id == tenant_id)
                    .values(generation=t.skill_state.c.generation + 1, updated_at=time.time())
                )
            gen = (await conn.execute(
                sa.select(t.skill_state.c.generation).where(t.skill_state.c.tenant_id == tenant_id)
            )).scalar_one()
            prev = (await conn.execute(
                sa.select(r.content).where(r.tenant_id == tenant_id, r.name == name)
                .order_by(r.id.desc()).limit(1)
            )).first()
            rev = Revision(
                id=new_id("srev"), tenant_id=tenant_id, name=name, action=action, status=status,
                content=content, content_hash=content_hash(content) if content is not None else None,
                diff=unified_diff(prev[0] if prev else None, content, name), author=author,
                reason=reason, provenance=provenance, generation=int(gen), created_at=time.time(),
            )
            await conn.execute(t.skill_revisions.insert().values(
                id=rev.id, tenant_id=tenant_id, name=name, action=action, status=status,
                content=content, content_hash=rev.content_hash, diff=rev.diff, author=author,
                reason=reason, provenance=provenance, generation=rev.generation,
                created_at=rev.created_at,
            ))
        return rev


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
