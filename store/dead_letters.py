"""Turns the recorder could not store whole, kept so that nothing is lost silently.

A dead letter holds the turn's record as ASCII-escaped JSON text (which every
store accepts, whatever the record holds) and a log-safe name of the error.
The recorder also writes a minimal version of the turn into `turns`, so the
session still counts it and feedback on it still finds it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from store import tables as t
from store.database import Database
from store.ids import new_id
from store.normalize import clean_str
from store.records import TurnRecord, turn_to_json
from store.write_errors import classify


def record_text(rec: TurnRecord) -> str | None:
    """The record as ASCII JSON text; None if it cannot be serialised at all."""
    try:
        return json.dumps(turn_to_json(rec), ensure_ascii=True, default=str)
    except Exception:  # noqa: BLE001 - any failure: the letter is kept without its record
        return None


class DeadLetterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rec: TurnRecord, error: str) -> str:
        """File `rec` as a dead letter; StoreUnavailable/InvalidInput like `write_turns`."""
        dl_id = new_id("dead")
        row = {
            "id": dl_id,
            "turn_id": clean_str(str(rec.id), 64),
            "tenant_id": clean_str(str(rec.tenant_id), 64),
            "session_id": clean_str(str(rec.session_id), 64),
            "created_at": rec.created_at if isinstance(rec.created_at, float) else time.time(),
            "failed_at": time.time(),
            "error": clean_str(error, 128),
            "record": record_text(rec),
        }
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(t.dead_letters.insert().values(**row))
        except Exception as exc:  # translated once, here; anything else re-raised
            err = classify(exc)
            if err is None or err is exc:
                raise
            raise err from exc
        return dl_id

    async def list(self, *, tenant_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        stmt = sa.select(t.dead_letters).order_by(t.dead_letters.c.failed_at).limit(limit)
        if tenant_id is not None:
            stmt = stmt.where(t.dead_letters.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [dict(r) for r in rows]
