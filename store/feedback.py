"""Feedback on turns and sessions: users, the judge (PRM), verifiers, tool errors."""

from __future__ import annotations

import math
import time
from typing import Any

import sqlalchemy as sa

from store import tables as t
from store.database import Database
from store.errors import InvalidInput
from store.ids import new_id
from store.records import FEEDBACK_SOURCES, FeedbackRecord

MAX_TEXT = 20_000


def validate_feedback(score: float | None, text: str | None, source: str) -> None:
    if score is None and not text:
        raise InvalidInput("feedback needs a score, a text, or both")
    if score is not None and (
        not isinstance(score, (int, float)) or math.isnan(score) or not -1.0 <= score <= 1.0
    ):
        raise InvalidInput("score must be a number in [-1, 1]")
    if text is not None and len(text) > MAX_TEXT:
        raise InvalidInput(f"text is longer than {MAX_TEXT} characters")
    if source not in FEEDBACK_SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(FEEDBACK_SOURCES)}")


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
        validate_feedback(score, text, source)
        rec = FeedbackRecord(
            id=new_id("fb"), tenant_id=tenant_id, source=source, created_at=time.time(),
            session_id=session_id, turn_id=turn_id,
            score=float(score) if score is not None else None, text=text, meta=meta,
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(
                t.feedback.insert().values(
                    id=rec.id, tenant_id=rec.tenant_id, session_id=rec.session_id,
                    turn_id=rec.turn_id, score=rec.score, text=rec.text, source=rec.source,
                    created_at=rec.created_at, meta=rec.meta,
                )
            )
        return rec

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
