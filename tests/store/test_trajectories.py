"""Trajectories, feedback and keys on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from store.database import Database
from store.errors import InvalidInput, NotFound
from store.feedback import FeedbackStore
from store.ids import new_id, uuid7
from store.keys import KeyStore
from store.records import TurnRecord
from store.trajectories import TrajectoryStore


def _turn(session: str, idx: int, **kw: object) -> TurnRecord:
    return TurnRecord(
        id=new_id("turn"), tenant_id="ten_a", session_id=session, idx=idx, turn_type="main",
        created_at=time.time(), request_model="m", stream=False,
        request={"model": "m", "messages": [{"role": "user", "content": f"q{idx}"}]},
        **kw,  # type: ignore[arg-type]
    )


async def test_write_and_read_turns(db: Database) -> None:
    ts = TrajectoryStore(db)
    turns = [_turn("ses_1", 0, weight_version="v0003", skill_generation=7,
                   injected_skills=[{"name": "dates", "hash": "ab"}], context_version="c2",
                   content="hi", input_tokens=3, output_tokens=1),
             _turn("ses_1", 1, session_done=True), _turn("ses_2", 0, session_external_id="ext")]
    await ts.write_turns(turns)
    sessions = await ts.list_sessions()
    assert {s.id: s.turns for s in sessions} == {"ses_1": 2, "ses_2": 1}
    d = await ts.get_session("ses_1")
    assert d.summary.done is True
    t0 = d.turns[0]
    assert (t0["weight_version"], t0["skill_generation"], t0["context_version"]) == ("v0003", 7, "c2")
    assert t0["injected_skills"] == [{"name": "dates", "hash": "ab"}]
    assert (await ts.get_session("ext")).summary.id == "ses_2"
    assert await ts.find_by_external_id("ten_a", "ext") == ("ses_2", 1)
    with pytest.raises(NotFound):
        await ts.get_session("nope")


async def test_feedback_validation(db: Database) -> None:
    fs = FeedbackStore(db)
    rec = await fs.add(tenant_id="t", session_id="s", turn_id=None, score=0.5, text=None)
    assert rec.score == 0.5
    for bad in ({"score": 2.0, "text": None}, {"score": None, "text": None}, {"score": float("nan"), "text": None}):
        with pytest.raises(InvalidInput):
            await fs.add(tenant_id="t", session_id="s", turn_id=None, **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await fs.add(tenant_id="t", session_id="s", turn_id=None, score=1, text=None, source="oracle")


async def test_keys_hashed_and_revocable(db: Database) -> None:
    ks = KeyStore(db)
    key, info = await ks.create_key("acme", name="bot")
    assert (await ks.lookup(key)) == info
    assert await ks.lookup(key + "x") is None
    assert await ks.any_live_keys()
    await ks.revoke(info.id)
    assert await ks.lookup(key) is None
    assert not await ks.any_live_keys()


def test_ids_are_time_sortable() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(u.version == 7 for u in ids[:5])
