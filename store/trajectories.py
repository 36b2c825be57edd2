"""Sessions and turns: batch writes from the recorder, reads for the CLI and the evolver."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from store import tables as t
from store.database import Database
from store.errors import InvalidInput, NotFound
from store.normalize import normalize_turn, session_key
from store.records import SessionDetail, SessionSummary, TurnRecord
from store.write_errors import classify

_TURN_COLUMNS = {c.name for c in t.turns.columns}
# What failure mining reads of a turn (not the upstream request, the response or think traces).
MINING_COLUMNS = ("id", "session_id", "idx", "turn_type", "status", "created_at", "request", "tool_calls")
_IDS_PER_STATEMENT = 500


_ROW_FIELDS = tuple(f for f in TurnRecord.__slots__ if f in _TURN_COLUMNS)
# Turns per INSERT statement of a batch: bounds how long one statement's encoding holds the loop.
_ROWS_PER_STATEMENT = 32
_NORMALIZE_SLICE = 32


@functools.cache
def _update_session(dialect: str) -> sa.Update:
    """One statement for every session of a batch (executemany): its new turns, its last
    turn's time and whether it ended."""
    s = t.sessions.c
    greatest = sa.func.max if dialect == "sqlite" else sa.func.greatest
    return t.sessions.update().where(s.id == sa.bindparam("b_id")).values(
        turn_count=s.turn_count + sa.bindparam("b_n", type_=sa.Integer),
        last_turn_at=greatest(s.last_turn_at, sa.bindparam("b_last", type_=s.last_turn_at.type)),
        done=sa.or_(s.done, sa.bindparam("b_done", type_=sa.Boolean)),
    )


@functools.cache
def db_now(dialect: str) -> sa.ColumnElement[float]:
    """The database's clock, in epoch seconds: when a row is written, whichever process wrote it."""
    if dialect == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
    return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)


def turn_row(rec: TurnRecord) -> dict[str, Any]:
    # Not dataclasses.asdict: that deep-copies every request body.
    return {f: getattr(rec, f) for f in _ROW_FIELDS}


class TrajectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def write_turns(self, batch: Sequence[TurnRecord]) -> int:
        """Write a batch of finished turns and their sessions in one transaction.

        Every record is normalised first (`store.normalize`). Idempotent: a turn
        whose id is already stored is skipped (spool replays), and a session is
        an upsert on both its id and its (tenant, external id): when another
        process created the client's session first, these turns join that one.
        Returns how many turns were new. Raises StoreUnavailable when the
        database could not take the write (retry later) and InvalidInput when
        it refused the rows (retrying them cannot succeed).
        """
        if not batch:
            return 0
        for i, rec in enumerate(batch, 1):
            normalize_turn(rec)
            if i % _NORMALIZE_SLICE == 0:
                await asyncio.sleep(0)  # a batch is hundreds of turns: let requests run between
        try:
            async with self.db.engine.begin() as conn:
                return await self._write_turns(conn, batch)
        except Exception as exc:  # translated once, here; anything else re-raised
            err = classify(exc)
            if err is None or err is exc:
                raise
            raise err from exc

    async def _write_turns(self, conn: AsyncConnection, batch: Sequence[TurnRecord]) -> int:
        s, tc = t.sessions.c, t.turns.c
        sessions: dict[str, TurnRecord] = {}
        for rec in batch:
            sessions.setdefault(rec.session_id, rec)
        ending = {r.session_id for r in batch if r.session_done}
        if ending:
            # A session that ends in this batch frees its external id before any new session
            # of the same id is inserted (at most one *open* session per tenant and external id).
            await conn.execute(t.sessions.update().where(s.id.in_(list(ending))).values(done=True))
        # executemany, not one multi-row VALUES: its statement is compiled once and cached
        # (a VALUES list is compiled again for every batch, on the event loop).
        # No conflict target: skip the row on the id *and* on the open (tenant, external id).
        await conn.execute(self.db.insert(t.sessions).on_conflict_do_nothing(), [
            {
                "id": rec.session_id,
                "tenant_id": rec.tenant_id,
                "external_id": rec.session_external_id,
                "started_at": rec.created_at,
                "last_turn_at": rec.created_at,
                "done": rec.session_id in ending,
                "turn_count": 0,
            }
            for rec in sessions.values()
        ])
        await self._join_existing_sessions(conn, batch, sessions)
        await self._free_indexes(conn, batch)
        # recorded_at: when the row is written (a turn may arrive late, from the spool or another process)
        insert_turns = (self.db.insert(t.turns).values(recorded_at=db_now(self.db.dialect))
                        .on_conflict_do_nothing().returning(tc.session_id))
        inserted: list[Any] = []
        for i in range(0, len(batch), _ROWS_PER_STATEMENT):
            # Slices: encoding a slice's JSON columns holds the event loop; each await frees it.
            rows = [turn_row(r) for r in batch[i:i + _ROWS_PER_STATEMENT]]
            inserted += (await conn.execute(insert_turns, rows)).scalars().all()
        new_per_session = Counter(str(sid) for sid in inserted)
        last: dict[str, float] = {}
        done: set[str] = set()
        for rec in batch:
            last[rec.session_id] = max(last.get(rec.session_id, rec.created_at), rec.created_at)
            if rec.session_done:
                done.add(rec.session_id)
        await conn.execute(_update_session(self.db.dialect), [
            {"b_id": sid, "b_n": new_per_session.get(sid, 0), "b_last": at, "b_done": sid in done}
            for sid, at in last.items()
        ])
        return len(inserted)

    async def _free_indexes(self, conn: AsyncConnection, batch: Sequence[TurnRecord]) -> None:
        """Give a turn whose index its session already holds the next free one.

        Each proxy numbers a session's turns from its own memory, so two replicas
        serving one client session both hand out 0, 1, ...; the store keeps the
        session's numbering whole (in write order). The session rows are locked first
        (PostgreSQL; SQLite writes one transaction at a time), so two replicas writing
        one session at once take turns. A single process never collides: unchanged.
        """
        sids = sorted({r.session_id for r in batch})
        lock = sa.select(t.sessions.c.id).where(t.sessions.c.id.in_(sids))
        if self.db.dialect != "sqlite":
            await conn.execute(lock.with_for_update())
        tc = t.turns.c
        rows = (await conn.execute(
            sa.select(tc.session_id, tc.idx, tc.id).where(tc.session_id.in_(sids)))).all()
        taken: dict[str, set[int]] = {}
        stored_ids = set()
        for sid, idx, tid in rows:
            taken.setdefault(str(sid), set()).add(int(idx))
            stored_ids.add(str(tid))
        for rec in batch:
            if rec.id in stored_ids:
                continue  # a replay of a stored turn: its insert is skipped
            used = taken.setdefault(rec.session_id, set())
            if rec.idx in used:
                rec.idx = max(used) + 1
            used.add(rec.idx)

    async def _join_existing_sessions(
        self, conn: AsyncConnection, batch: Sequence[TurnRecord], sessions: dict[str, TurnRecord]
    ) -> None:
        """Point turns at the stored session of their (tenant, external id) when ours lost the race."""
        s = t.sessions.c
        externals = {r.session_external_id for r in sessions.values() if r.session_external_id}
        if not externals:
            return
        rows = (
            await conn.execute(
                sa.select(s.id, s.tenant_id, s.external_id, s.done).where(
                    sa.or_(s.id.in_(list(sessions)), s.external_id.in_(list(externals)))
                )
            )
        ).all()
        stored_ids = {str(r[0]) for r in rows}
        owner = {(str(r[1]), str(r[2])): str(r[0]) for r in rows if r[2] is not None and not r[3]}
        moved: dict[str, str] = {}
        for sid, rec in sessions.items():
            if sid in stored_ids or rec.session_external_id is None:
                continue
            real = owner.get((rec.tenant_id, rec.session_external_id))
            if real is not None:
                moved[sid] = real
        if not moved:
            return
        for rec in batch:
            if rec.session_id in moved:
                rec.session_id = moved[rec.session_id]

    async def mark_session_done(self, session_id: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(
                t.sessions.update().where(t.sessions.c.id == session_id).values(done=True)
            )

    def _summary_select(self) -> sa.Select[tuple[object, ...]]:
        s = t.sessions.c
        return sa.select(
            s.id, t.tenants.c.name, s.tenant_id, s.external_id, s.turn_count, s.started_at,
            s.last_turn_at, s.done,
        ).outerjoin(t.tenants, t.tenants.c.id == s.tenant_id)

    @staticmethod
    def _summary(row: sa.Row[tuple[object, ...]]) -> SessionSummary:
        sid, tname, tid, ext, count, started, last, done = tuple(row)
        return SessionSummary(
            id=str(sid), tenant=str(tname or tid), external_id=None if ext is None else str(ext),
            turns=int(count), started_at=float(started),  # type: ignore[call-overload, arg-type]
            last_turn_at=float(last), done=bool(done),  # type: ignore[arg-type]
        )

    async def list_sessions(
        self, *, tenant_id: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[SessionSummary]:
        stmt = self._summary_select()
        if tenant_id is not None:
            stmt = stmt.where(t.sessions.c.tenant_id == tenant_id)
        stmt = stmt.order_by(t.sessions.c.started_at.desc()).limit(limit).offset(offset)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [self._summary(r) for r in rows]

    async def session_summary(
        self, session_id: str, *, tenant_id: str | None = None
    ) -> SessionSummary:
        """The session with this id, or with this external (client-given) id.

        External ids are the client's and are unique only within a tenant, so
        pass the tenant: tenant b never sees tenant a's session. Without one (the
        CLI, a global tool) an external id shared by several tenants is refused;
        within a tenant the newest session with that external id wins.
        """
        s = t.sessions.c
        stmt = self._summary_select().where(sa.or_(s.id == session_id, s.external_id == session_id))
        if tenant_id is not None:
            stmt = stmt.where(s.tenant_id == tenant_id)
        stmt = stmt.order_by((s.id == session_id).desc(), s.started_at.desc()).limit(50)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        if not rows:
            raise NotFound(f"no session {session_id!r}")
        found = [self._summary(r) for r in rows]
        if found[0].id != session_id and tenant_id is None:
            tenants = sorted({f.tenant for f in found})
            if len(tenants) > 1:
                raise InvalidInput(
                    f"session id {session_id!r} names sessions of several tenants "
                    f"({', '.join(tenants)}); name the tenant"
                )
        return found[0]

    async def get_session(self, session_id: str, *, tenant_id: str | None = None) -> SessionDetail:
        """A session with its turns and feedback (see `session_summary` for the id)."""
        summary = await self.session_summary(session_id, tenant_id=tenant_id)
        async with self.db.engine.connect() as conn:
            turns = (
                await conn.execute(
                    sa.select(t.turns).where(t.turns.c.session_id == summary.id).order_by(t.turns.c.idx)
                )
            ).mappings().all()
            fb = (
                await conn.execute(
                    sa.select(t.feedback)
                    .where(
                        sa.or_(
                            t.feedback.c.session_id == summary.id,
                            t.feedback.c.turn_id.in_([r["id"] for r in turns] or [""]),
                        )
                    )
                    .order_by(t.feedback.c.created_at)
                )
            ).mappings().all()
        return SessionDetail(summary, [dict(r) for r in turns], [dict(r) for r in fb])

    async def get_turn(self, turn_id: str, *, tenant_id: str | None = None) -> dict[str, Any]:
        """One turn; with `tenant_id`, only if it is that tenant's (NotFound otherwise)."""
        stmt = sa.select(t.turns).where(t.turns.c.id == turn_id)
        if tenant_id is not None:
            stmt = stmt.where(t.turns.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        if row is None:
            raise NotFound(f"no turn {turn_id!r}")
        return dict(row)

    async def session_exists(self, session_id: str) -> bool:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(t.sessions.c.id).where(t.sessions.c.id == session_id))
            ).first()
        return row is not None

    async def find_by_external_id(self, tenant_id: str, external_id: str) -> tuple[str, int] | None:
        """(session id, next turn index) of the open session named by the client.

        A session closed by `X-Session-Done` is not found: the same id then names a new one.
        """
        s = t.sessions.c
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(s.id, s.turn_count)
                    .where(s.tenant_id == tenant_id, s.external_id == session_key(external_id),
                           s.done.is_(False))
                    .order_by(s.started_at.desc())
                    .limit(1)
                )
            ).first()
        return (str(row[0]), int(row[1])) if row else None

    async def find_by_request_hash(
        self, tenant_id: str, hashes: Sequence[str]
    ) -> tuple[str, int] | None:
        """The most recent session with a turn whose request hashed to one of `hashes`."""
        if not hashes:
            return None
        tc = t.turns.c
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(tc.session_id)
                    .where(tc.tenant_id == tenant_id, tc.request_hash.in_(list(hashes)))
                    .order_by(tc.created_at.desc())
                    .limit(1)
                )
            ).first()
            if row is None:
                return None
            count = (
                await conn.execute(
                    sa.select(t.sessions.c.turn_count).where(t.sessions.c.id == row[0])
                )
            ).scalar_one_or_none()
        return str(row[0]), int(count or 0)

    async def continuation_candidates(
        self, tenant_id: str, hashes: Sequence[str], *, limit: int = 16
    ) -> list[dict[str, Any]]:
        """Answered turns whose request hashed to one of `hashes`, newest first, with
        what a continuation must repeat (content, tool calls) and their session's state."""
        if not hashes:
            return []
        tc, s = t.turns.c, t.sessions.c
        stmt = (
            sa.select(tc.session_id, tc.request_hash, tc.idx, tc.content, tc.tool_calls,
                      s.turn_count, s.done)
            .join(t.sessions, s.id == tc.session_id)
            .where(tc.tenant_id == tenant_id, tc.request_hash.in_(list(hashes)), tc.status == "ok")
            .order_by(tc.created_at.desc())
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [dict(r) for r in rows]

    async def turns_since(self, since: float, *, tenant_id: str | None = None) -> list[dict[str, Any]]:
        stmt = sa.select(t.turns).where(t.turns.c.created_at >= since)
        if tenant_id is not None:
            stmt = stmt.where(t.turns.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(t.turns.c.created_at))).mappings().all()
        return [dict(r) for r in rows]

    async def newest_recorded_at(self, tenant_id: str) -> float | None:
        """When the tenant's newest turn row was written (database clock); None if it has none."""
        tc = t.turns.c
        async with self.db.engine.connect() as conn:
            v = (await conn.execute(
                sa.select(sa.func.max(tc.recorded_at)).where(tc.tenant_id == tenant_id))).scalar_one_or_none()
        return None if v is None else float(v)

    async def recorded_after(self, tenant_id: str, after: float) -> list[tuple[str, float]]:
        """(id, recorded_at) of the tenant's turns written after `after`: the ids only (an
        index-only read), so that a caller reads in full only the turns it has not seen."""
        tc = t.turns.c
        stmt = sa.select(tc.id, tc.recorded_at).where(tc.tenant_id == tenant_id, tc.recorded_at > after)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(str(r[0]), float(r[1])) for r in rows]

    async def mining_rows(self, tenant_id: str, *, created_from: float,
                          ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The tenant's main, answered turns served at `created_from` or later (of `ids`, when
        given), with the columns failure mining reads (`MINING_COLUMNS`) and `recorded_at`."""
        tc = t.turns.c
        cols = [tc[name] for name in MINING_COLUMNS] + [tc.recorded_at]
        stmt = sa.select(*cols).where(tc.tenant_id == tenant_id, tc.created_at >= created_from,
                                      tc.turn_type == "main", tc.status == "ok")
        out: list[dict[str, Any]] = []
        async with self.db.engine.connect() as conn:
            if ids is None:
                return [dict(r) for r in (await conn.execute(stmt.order_by(tc.created_at))).mappings()]
            wanted = list(ids)
            for i in range(0, len(wanted), _IDS_PER_STATEMENT):
                chunk = wanted[i:i + _IDS_PER_STATEMENT]
                out += [dict(r) for r in (await conn.execute(stmt.where(tc.id.in_(chunk)))).mappings()]
        return out

    async def count_turns(self) -> int:
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(t.turns))).scalar_one())

