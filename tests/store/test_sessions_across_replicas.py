"""One client session served by two proxy replicas keeps one whole turn numbering (issue 18).

Each replica numbers a session's turns from its own memory (proxy/sessions.py), so both
hand out 0, 1, ...; the store joins them into the one open session of that external id
and gives a colliding turn the next free index, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

from store.database import Database
from store.ids import new_id
from store.keys import KeyStore
from store.records import TurnRecord
from store.settings import StoreSettings
from store.trajectories import TrajectoryStore


def _turn(session: str, idx: int) -> TurnRecord:
    return TurnRecord(
        id=new_id("turn"), tenant_id="ten_a", session_id=session, idx=idx, turn_type="main",
        created_at=time.time(), request_model="m", stream=False, session_external_id="ep-1",
        request={"model": "m", "messages": [{"role": "user", "content": f"q{idx}"}]},
    )


async def test_two_replicas_numbering_one_session_from_zero_keep_it_whole(db: Database) -> None:
    ts = TrajectoryStore(db)
    a0, b0, a1, b1 = _turn("ses_a", 0), _turn("ses_b", 0), _turn("ses_a", 1), _turn("ses_b", 1)
    for turn in (a0, b0, a1, b1):  # the replicas' recorders write in turn
        await ts.write_turns([turn])
    detail = await ts.get_session("ep-1")
    assert detail.summary.id == "ses_a" and detail.summary.turns == 4
    assert [(t["id"], t["idx"]) for t in detail.turns] == [
        (a0.id, 0), (b0.id, 1), (a1.id, 2), (b1.id, 3)]
    # a spool replay of stored turns changes nothing
    assert await ts.write_turns([a0, b1]) == 0
    again = await ts.get_session("ep-1")
    assert [(t["id"], t["idx"]) for t in again.turns] == [(t["id"], t["idx"]) for t in detail.turns]


async def test_replicas_starting_together_make_one_tenant(store_url: str) -> None:
    """Found starting two proxies and a worker at once: each created the `default` tenant on
    its first look, and the one that lost died at startup (`tenants_name_key`). Now
    every replica gets the one tenant."""
    dbs = [await Database.open(StoreSettings(url=store_url)) for _ in range(4)]
    try:
        got = await asyncio.gather(*(KeyStore(d).ensure_tenant("default") for d in dbs))
    finally:
        for d in dbs:
            await d.close()
    assert len({tenant.id for tenant in got}) == 1
