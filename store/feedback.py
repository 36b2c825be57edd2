"""Feedback on turns and sessions: users, the judge (PRM), verifiers, tool errors."""

from __future__ import annotations

import math
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from store import tables as t
from store.database import Database
from store.errors import InvalidInput, StoreError
from store.ids import new_id
from store.records import FEEDBACK_SOURCES, FeedbackRecord

MAX_TEXT = 20_000
_IDS_PER_STATEMENT = 500


def _is_score(score: object) -> bool:
    # bool is an int in Python, and `true` is not a score.
    return isinstance(score, (int, float)) and not isinstance(score, bool)


def _text_problem(text: str) -> str | None:
    """Why a database could not store this text faithfully (PostgreSQL refuses both)."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def _json_problem(value: object) -> str | None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if (why := _text_problem(v)) is not None:
                return f"a string {why}"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return "a number is not finite"
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif v is not None and not isinstance(v, (int, bool)):
            return f"a value of type {type(v).__name__} is not JSON"
    return None


def validate_feedback(
    score: float | None, text: str | None, source: str, meta: dict[str, Any] | None = None
) -> None:
    """Refuse what the store cannot keep faithfully, with a message naming the field."""
    if score is None and not text:
        raise InvalidInput("feedback needs a score, a text, or both")
    if score is not None and (
        not _is_score(score) or not math.isfinite(score) or not -1.0 <= score <= 1.0
    ):
        raise InvalidInput("score must be a finite number in [-1, 1]")
    if text is not None:
        if len(text) > MAX_TEXT:
            raise InvalidInput(f"text is longer than {MAX_TEXT} characters")
        if (why := _text_problem(text)) is not None:
            raise InvalidInput(f"text {why}")
    if source not in FEEDBACK_SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(FEEDBACK_SOURCES)}")
    if meta is not None and (why := _json_problem(meta)) is not None:
        raise InvalidInput(f"meta: {why}")


class FeedbackStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        *,
        tenant_id: str,
        session_id: str | None,
        turn_id: str | None,
        score: float | None,
        text: str | None,
        source: str = "user",
        meta: dict[str, Any] | None = None,
    ) -> FeedbackRecord:
        validate_feedback(score, text, source, meta)
        rec = FeedbackRecord(
            id=new_id("fb"), tenant_id=tenant_id, source=source, created_at=time.time(),
            session_id=session_id, turn_id=turn_id,
            score=float(score) if score is not None else None, text=text, meta=meta,
        )
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    t.feedback.insert().values(
                        id=rec.id, tenant_id=rec.tenant_id, session_id=rec.session_id,
                        turn_id=rec.turn_id, score=rec.score, text=rec.text, source=rec.source,
                        created_at=rec.created_at, meta=rec.meta,
                    )
                )
        except (SQLAlchemyError, OSError) as exc:
            # The driver's message carries the SQL parameters (the feedback text): keep
            # only the type, here, once.
            raise StoreError(f"storing feedback failed ({type(exc).__name__})") from exc
        return rec

    async def latest_at(self, tenant_id: str) -> float:
        """When the tenant's newest feedback was stored (0 if none): a cheap 'anything new?'.

        Outcomes and complaints arrive after a session's last turn, so a watcher
        that looks only at turns would see them one session late.
        """
        async with self.db.engine.connect() as conn:
            v = (await conn.execute(
                sa.select(sa.func.max(t.feedback.c.created_at)).where(t.feedback.c.tenant_id == tenant_id)
            )).scalar_one_or_none()
        return float(v or 0.0)

    async def stored_after(self, tenant_id: str, after: float) -> list[tuple[str, float]]:
        """(id, created_at) of the tenant's feedback stored after `after` (ids only: an index read)."""
        fc = t.feedback.c
        stmt = sa.select(fc.id, fc.created_at).where(fc.tenant_id == tenant_id, fc.created_at > after)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(str(r[0]), float(r[1])) for r in rows]

    async def by_ids(self, ids: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with self.db.engine.connect() as conn:
            for i in range(0, len(ids), _IDS_PER_STATEMENT):
                rows = (await conn.execute(
                    sa.select(t.feedback).where(t.feedback.c.id.in_(ids[i:i + _IDS_PER_STATEMENT])))).mappings()
                out += [dict(r) for r in rows]
        return out

    async def for_turns(self, turn_ids: list[str]) -> list[dict[str, Any]]:
        if not turn_ids:
            return []
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(t.feedback).where(t.feedback.c.turn_id.in_(turn_ids)))
            ).mappings().all()
        return [dict(r) for r in rows]

    async def for_sessions(self, session_ids: list[str]) -> list[dict[str, Any]]:
        if not session_ids:
            return []
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.feedback).where(t.feedback.c.session_id.in_(session_ids))
                )
            ).mappings().all()
        return [dict(r) for r in rows]
