"""The recorded turn an OpenAI `previous_response_id` names, read back for a follow-up.

A Response's id is its turn's id under OpenAI's prefix (the proxy maps one to
the other), so the lookup is by the turns' primary key, within one tenant: a
turn of another tenant is not found, exactly like an id that never existed.
A turn is continuable only when it recorded `followup_from` (a Responses turn
made with `store` not false).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from store import tables as t
from store.database import Database

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FollowupTurn:
    """What a follow-up needs of the turn it continues."""

    turn_id: str
    status: str
    request: JSON  # the chat body as the agent's request was translated (before injection)
    response: JSON | None  # the chat completion (assembled when it was streamed)
    followup_from: int


async def find_followup_turn(db: Database, tenant_id: str, turn_id: str) -> FollowupTurn | None:
    """The tenant's continuable turn `turn_id`, or None (unknown, another tenant's, not continuable)."""
    c = t.turns.c
    stmt = sa.select(c.id, c.status, c.request, c.response, c.followup_from).where(
        c.id == turn_id, c.tenant_id == tenant_id, c.followup_from.is_not(None))
    async with db.engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None or not isinstance(row.request, dict):
        return None
    response = row.response if isinstance(row.response, dict) else None
    return FollowupTurn(str(row.id), str(row.status), row.request, response, int(row.followup_from))
