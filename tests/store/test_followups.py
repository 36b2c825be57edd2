"""The turn a `previous_response_id` names, read back per tenant (store/followups.py)."""

from __future__ import annotations

import time

from store.database import Database
from store.followups import find_followup_turn
from store.ids import new_id
from store.records import TurnRecord
from store.trajectories import TrajectoryStore

REQUEST = {"model": "m", "messages": [{"role": "system", "content": "I"},
                                      {"role": "user", "content": "q"}]}
ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "a"},
                       "finish_reason": "stop"}]}


def _turn(tenant: str, followup_from: int | None) -> TurnRecord:
    return TurnRecord(
        id=new_id("turn"), tenant_id=tenant, session_id=new_id("ses"), idx=0, turn_type="main",
        created_at=time.time(), request_model="m", stream=False, request=REQUEST, response=ANSWER,
        followup_from=followup_from)


async def test_a_continuable_turn_is_found_by_its_tenant_only(db: Database) -> None:
    ours, chat, unstored = _turn("ten_a", 1), _turn("ten_a", None), _turn("ten_a", 0)
    unstored.followup_from = None
    await TrajectoryStore(db).write_turns([ours, chat, unstored])
    found = await find_followup_turn(db, "ten_a", ours.id)
    assert found is not None
    assert (found.turn_id, found.status, found.followup_from) == (ours.id, "ok", 1)
    assert found.request == REQUEST and found.response == ANSWER
    assert await find_followup_turn(db, "ten_b", ours.id) is None  # another tenant's
    assert await find_followup_turn(db, "ten_a", chat.id) is None  # a chat turn
    assert await find_followup_turn(db, "ten_a", unstored.id) is None  # store: false
    assert await find_followup_turn(db, "ten_a", new_id("turn")) is None


async def test_followup_from_round_trips_the_turn_row(db: Database) -> None:
    rec = _turn("ten_a", 0)
    await TrajectoryStore(db).write_turns([rec])
    row = await TrajectoryStore(db).get_turn(rec.id)
    assert row["followup_from"] == 0
