"""The export query on SQLite and PostgreSQL: filters, outcomes, order, paging, per session."""

from __future__ import annotations

from typing import Any

import pytest

from store.database import Database
from store.errors import InvalidInput
from store.export import ExportTurn, Selection, iter_turns
from store.feedback import FeedbackStore
from store.ids import new_id
from store.keys import KeyStore
from store.records import TurnRecord
from store.trajectories import TrajectoryStore

T0 = 1_790_000_000.0


def _turn(tenant_id: str, session: str, idx: int, at: float, **kw: Any) -> TurnRecord:
    fields: dict[str, Any] = {
        "turn_type": "main", "content": f"a{idx}", "request_model": "m", "stream": False,
        "request": {"model": "m", "messages": [{"role": "user", "content": f"{session} q{idx}"}]},
        **kw,
    }
    return TurnRecord(id=new_id("turn"), tenant_id=tenant_id, session_id=session, idx=idx,
                      created_at=at, **fields)


async def _collect(db: Database, sel: Selection, page_size: int = 2) -> list[ExportTurn]:
    return [t async for t in iter_turns(db, sel, page_size=page_size)]


@pytest.fixture
async def world(db: Database) -> dict[str, Any]:
    """Two tenants; acme: a good session s1 (3 turns, v0002), a bad one s2 (an error turn),
    an unscored s3 with a replay and a side turn; beta: one turn."""
    keys = KeyStore(db)
    acme, beta = await keys.ensure_tenant("acme"), await keys.ensure_tenant("beta")
    s1, s2, s3, s4 = (new_id("ses") for _ in range(4))
    turns = [
        _turn(acme.id, s1, 0, T0 + 1, weight_version="v0002"),
        _turn(acme.id, s2, 0, T0 + 2),
        _turn(acme.id, s1, 1, T0 + 3, weight_version="v0002"),
        _turn(acme.id, s2, 1, T0 + 4, status="upstream_error", content=None,
              error={"type": "server_error", "message": "boom"}),
        _turn(acme.id, s1, 2, T0 + 5, weight_version="v0002"),
        _turn(acme.id, s3, 0, T0 + 6),
        _turn(acme.id, s3, 1, T0 + 7, turn_type="replay"),
        _turn(acme.id, s3, 2, T0 + 8, turn_type="side"),
        _turn(beta.id, s4, 0, T0 + 9),
    ]
    await TrajectoryStore(db).write_turns(turns)
    fb = FeedbackStore(db)
    await fb.add(tenant_id=acme.id, session_id=s1, turn_id=None, score=1.0, text=None)
    # a turn's own score wins over its session's
    await fb.add(tenant_id=acme.id, session_id=s1, turn_id=turns[2].id, score=-0.5, text=None)
    await fb.add(tenant_id=acme.id, session_id=s2, turn_id=turns[1].id, score=-1.0, text=None)
    return {"acme": acme.id, "beta": beta.id, "s": (s1, s2, s3, s4), "turns": turns}


async def test_every_traffic_turn_in_time_order_paged(db: Database, world: dict[str, Any]) -> None:
    got = await _collect(db, Selection())
    turns = world["turns"]
    assert [t.id for t in got] == [t.id for i, t in enumerate(turns) if i != 6]  # no replay
    with_replays = await _collect(db, Selection(include_replays=True), page_size=1)
    assert len(with_replays) == len(turns)
    first = got[0]
    assert first.tenant == "acme" and first.request["messages"][0]["content"].endswith("q0")
    assert first.weight_version == "v0002" and first.content == "a0"


async def test_filters(db: Database, world: dict[str, Any]) -> None:
    acme, beta = world["acme"], world["beta"]
    s1, s2, s3, s4 = world["s"]

    async def sessions(**kw: Any) -> list[tuple[str, int]]:
        return [(t.session_id, t.idx) for t in await _collect(db, Selection(**kw))]

    assert await sessions(tenant_id=beta) == [(s4, 0)]
    assert await sessions(tenant_id=acme, since=T0 + 3, until=T0 + 6) == [(s1, 1), (s2, 1), (s1, 2)]
    assert await sessions(status="error") == [(s2, 1)]
    assert len(await sessions(status="ok")) == 7
    assert await sessions(weight_version="v0002") == [(s1, 0), (s1, 1), (s1, 2)]
    assert (s1, 0) not in await sessions(weight_version="base")
    # good: the session's score (1.0) except the turn scored -0.5 on its own
    assert await sessions(feedback="good") == [(s1, 0), (s1, 2)]
    assert await sessions(feedback="bad") == [(s2, 0), (s1, 1), (s2, 1)]
    assert await sessions(feedback="unscored") == [(s3, 0), (s3, 2), (s4, 0)]
    assert await sessions(status="ok", feedback="bad") == [(s2, 0), (s1, 1)]


async def test_scores_say_where_they_come_from(db: Database, world: dict[str, Any]) -> None:
    by_id = {t.id: t for t in await _collect(db, Selection())}
    turns = world["turns"]
    assert (by_id[turns[0].id].score, by_id[turns[0].id].scored_by) == (1.0, "session")
    assert (by_id[turns[2].id].score, by_id[turns[2].id].scored_by) == (-0.5, "turn")
    # s2 has no session score: the mean over its turns' scores
    assert (by_id[turns[3].id].score, by_id[turns[3].id].scored_by) == (-1.0, "turns")
    assert by_id[turns[5].id].verdict == "unscored"


async def test_per_session_is_the_last_main_turn(db: Database, world: dict[str, Any]) -> None:
    s1, s2, s3, s4 = world["s"]
    got = await _collect(db, Selection(per="session"), page_size=1)
    assert sorted((t.session_id, t.idx) for t in got) == sorted([(s1, 2), (s2, 1), (s3, 0), (s4, 0)])
    assert [t.session_id for t in got] == sorted(t.session_id for t in got)
    # judged by the session's score (s1: 1.0), never by a turn's own (-0.5 on s1's turn 1)
    good = await _collect(db, Selection(per="session", feedback="good"))
    assert [(t.session_id, t.idx, t.scored_by) for t in good] == [(s1, 2, "session")]
    ok = await _collect(db, Selection(per="session", status="ok", tenant_id=world["acme"]))
    assert sorted((t.session_id, t.idx) for t in ok) == sorted([(s1, 2), (s2, 0), (s3, 0)])


async def test_refuses_an_empty_window() -> None:
    with pytest.raises(InvalidInput):
        Selection(since=T0 + 5, until=T0 + 5)
