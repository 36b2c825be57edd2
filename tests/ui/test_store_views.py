"""The store's read views behind the dashboard, on SQLite and PostgreSQL.

Times are set on the records here, so buckets and markers are exact.
"""

from __future__ import annotations

from typing import Any

from store.browse import search_sessions, skill_usage, tenant_names
from store.database import Database
from store.feedback import FeedbackStore
from store.ids import new_id
from store.keys import KeyStore
from store.learning import learning_series, pick_bucket, session_outcomes
from store.records import TurnRecord
from store.trajectories import TrajectoryStore
from tests.store.conftest import db, store_url  # noqa: F401 - fixtures

T0 = 1_700_000_040.0  # a whole minute, so the 60 s buckets start exactly here


def _turn(tenant: str, session: str, idx: int, at: float, **kw: Any) -> TurnRecord:
    return TurnRecord(
        id=new_id("turn"), tenant_id=tenant, session_id=session, idx=idx, turn_type="main",
        created_at=at, request_model=kw.pop("model", "gpt-fake"), stream=False,
        request={"messages": [{"role": "user", "content": "hi"}]},
        session_external_id=kw.pop("ext", None), **kw,
    )


async def _world(db: Database) -> dict[str, Any]:  # noqa: F811
    keys = KeyStore(db)
    a = (await keys.ensure_tenant("acme")).id
    b = (await keys.ensure_tenant("bolt")).id
    ts, fb = TrajectoryStore(db), FeedbackStore(db)
    turns = [
        # minute 0: two sessions at generation 1, base weights
        _turn(a, "s1", 0, T0 + 1, ext="Order_100%", skill_generation=1,
              injected_skills=[{"id": "search-then-narrow"}]),
        _turn(a, "s2", 0, T0 + 2, skill_generation=1, model="other-model",
              injected_skills=[{"id": "search-then-narrow"}, {"id": "verify"}]),
        # minute 1: generation 2 (a skill changed), then weights v0001
        _turn(a, "s3", 0, T0 + 61, skill_generation=2, status="error"),
        _turn(a, "s4", 0, T0 + 70, skill_generation=2, weight_version="v0001"),
        _turn(a, "s5", 0, T0 + 80, skill_generation=2, weight_version="v0001"),
        _turn(b, "s9", 0, T0 + 5, ext="bolt-1", skill_generation=1,
              injected_skills=[{"id": "search-then-narrow"}]),
    ]
    await ts.write_turns(turns)
    ids = {t.session_id: t.id for t in turns}

    async def score(session: str, value: float, *, turn: bool = False) -> None:
        await fb.add(tenant_id=a if session != "s9" else b, session_id=session,
                     turn_id=ids[session] if turn else None, score=value, text=None,
                     source="judge" if turn else "verifier")

    await score("s1", 1.0)  # success from the session's own score...
    await score("s1", -1.0, turn=True)  # ...which wins over its turns'
    await score("s2", -0.5, turn=True)  # failure, from its turns only
    await score("s4", 0.5)
    await score("s5", 1.0)
    await score("s9", -1.0)  # another tenant's: never counted for acme
    return {"a": a, "b": b}


async def test_learning_series_buckets_and_markers(db: Database) -> None:  # noqa: F811
    w = await _world(db)
    series = await learning_series(db, w["a"], bucket_s=60)
    assert [(b.start, b.sessions, b.successes) for b in series.buckets] == [
        (T0, 2, 1), (T0 + 60, 2, 2)]
    assert [round(b.avg_reward, 3) for b in series.buckets] == [0.25, 0.75]
    assert series.unscored == 1  # s3: an error nobody scored
    assert [(m.at, m.kind, m.value, m.previous) for m in series.markers] == [
        (T0 + 61, "skills", "g2", "g1"), (T0 + 70, "weights", "v0001", None)]
    # A window: only what falls in it.
    late = await learning_series(db, w["a"], since=T0 + 60, bucket_s=60)
    assert [b.sessions for b in late.buckets] == [2] and len(late.markers) == 2
    assert pick_bucket(0) == 1 and pick_bucket(3600) == 300 and pick_bucket(10**9) == 7 * 86400


async def test_session_outcomes(db: Database) -> None:  # noqa: F811
    await _world(db)
    out = await session_outcomes(db, ["s1", "s2", "s3"])
    assert (out["s1"].label, out["s1"].scored_by, out["s1"].score) == ("success", "session", 1.0)
    assert (out["s2"].label, out["s2"].scored_by) == ("failure", "turns")
    assert (out["s3"].label, out["s3"].score) == ("unscored", None)


async def test_search_sessions_scoped_paged_and_literal(db: Database) -> None:  # noqa: F811
    w = await _world(db)
    rows, more = await search_sessions(db, tenant_id=w["a"])
    assert [r.id for r in rows] == ["s5", "s4", "s3", "s2", "s1"] and not more
    assert rows[0].weight_version == "v0001" and rows[0].skill_generation == 2
    assert rows[2].errors == 1 and rows[2].outcome.label == "unscored"
    page1, more1 = await search_sessions(db, tenant_id=w["a"], limit=2)
    page3, more3 = await search_sessions(db, tenant_id=w["a"], limit=2, offset=4)
    assert [r.id for r in page1] == ["s5", "s4"] and more1
    assert [r.id for r in page3] == ["s1"] and not more3
    # Case-insensitive plain text: "%" is a character, not a wildcard.
    async def found(q: str) -> list[str]:
        return [r.id for r in (await search_sessions(db, tenant_id=w["a"], query=q))[0]]

    assert await found("order_100%") == ["s1"]
    assert await found("order_1000") == []
    assert await found("OTHER-") == ["s2"]
    # A tenant never finds another's session, even by its name.
    assert (await search_sessions(db, tenant_id=w["a"], query="bolt"))[0] == []
    every = (await search_sessions(db, tenant_id=None, query="bolt"))[0]
    assert [(r.id, r.tenant) for r in every] == [("s9", "bolt")]
    assert await tenant_names(db) == ["acme", "bolt"]


async def test_skill_usage_counts_injections(db: Database) -> None:  # noqa: F811
    w = await _world(db)
    usage = await skill_usage(db, w["a"])
    assert {k: v.turns for k, v in usage.items()} == {"search-then-narrow": 2, "verify": 1}
    assert usage["search-then-narrow"].last_used == T0 + 2
    assert {k: v.turns for k, v in (await skill_usage(db, w["b"])).items()} == {
        "search-then-narrow": 1}
