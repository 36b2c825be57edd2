"""The incremental failure watch against the full re-mine, on SQLite and PostgreSQL.

Sessions are agent loops over generic tools (an invoicing API), written turn by
turn as the recorder would; tool errors are in the formats real tools use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from evolver.loop import Evolver, EvolverLoop
from evolver.watch import FailureWatch
from store import tables as t
from store.database import Database
from store.evolution import EvolutionStore
from store.feedback import FeedbackStore
from store.keys import KeyStore
from store.records import TurnRecord
from store.settings import EvolverSettings, SkillsSettings, StoreSettings
from store.skills import SkillLibrary
from store.trajectories import TrajectoryStore
from tests.store.conftest import db, store_url  # noqa: F401 - fixtures

TOOLS = [{"type": "function", "function": {
    "name": "create_invoice", "description": "Create an invoice.",
    "parameters": {"type": "object", "properties": {
        "customer": {"type": "string"}, "due_date": {"type": "string"},
        "currency": {"type": "string", "enum": ["EUR", "USD"]}},
        "required": ["customer", "due_date"]}}}]

ERRORS = {
    "date": "error: due_date must be YYYY-MM-DD, got 03/12/2026",
    "currency": json.dumps({"error": {"message": "currency must be one of: EUR, USD", "param": "currency",
                                      "type": "invalid_request_error"}}),
}


class AgentSession:
    """One agent loop: each turn calls the tool, the next request carries the tool's result."""

    def __init__(self, tenant_id: str, sid: str) -> None:
        self.tenant_id, self.sid = tenant_id, sid
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": f"Invoice ACME ({sid})"}]
        self.idx = 0

    def call(self, result: str, *, created_at: float | None = None) -> TurnRecord:
        """A turn that calls the tool; `result` (ok, date, currency) is what the tool answers."""
        cid = f"call_{self.sid}_{self.idx}"
        args = {"customer": "ACME", "due_date": "03/12/2026" if result == "date" else "2026-12-03"}
        if result == "currency":
            args["currency"] = "euro"
        call = {"id": cid, "type": "function", "function": {"name": "create_invoice", "arguments": json.dumps(args)}}
        rec = self._turn([call], created_at)
        self.messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": cid,
                           "content": ERRORS.get(result, json.dumps({"invoice_id": f"inv_{cid}"}))}]
        return rec

    def answer(self, *, created_at: float | None = None) -> TurnRecord:
        return self._turn([], created_at, content="Done.")

    def _turn(self, calls: list[dict[str, Any]], created_at: float | None, content: str | None = None
              ) -> TurnRecord:
        rec = TurnRecord(
            id=f"turn_{self.sid}_{self.idx}", tenant_id=self.tenant_id, session_id=self.sid, idx=self.idx,
            turn_type="main", created_at=time.time() if created_at is None else created_at, request_model="m",
            stream=False, request={"model": "m", "messages": [dict(m) for m in self.messages], "tools": TOOLS},
            response={"choices": [{"message": {"role": "assistant", "content": content,
                                               "tool_calls": calls or None}}]},
            tool_calls=calls or None, content=content)
        self.idx += 1
        return rec


async def _tenant(database: Database, name: str = "acme") -> str:
    return (await KeyStore(database).ensure_tenant(name)).id


def _evolver(database: Database, tmp_path: Path, **settings: Any) -> Evolver:
    library = SkillLibrary(database, SkillsSettings(seed_dir=None), tmp_path / "data")
    return Evolver(database, library, NoFix(), EvolverSettings(**settings))


class NoFix:
    """A replayer whose model answers every replay without a tool call: no proposal passes the gate."""

    async def replay(self, request: dict[str, Any], *, tenant: str, candidate: str | None,
                     context: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return []


def _watch(database: Database, lookback_s: float = 86_400.0) -> FailureWatch:
    return FailureWatch(TrajectoryStore(database), FeedbackStore(database), EvolutionStore(database),
                        lookback_s=lookback_s)


async def test_an_idle_poll_reads_nothing_new(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tid = await _tenant(db)
    ts = TrajectoryStore(db)
    watch, full = _watch(db), _evolver(db, tmp_path)
    assert (await watch.look(tid)).full  # a tenant with no traffic yet
    a, b = AgentSession(tid, "ses_a"), AgentSession(tid, "ses_b")
    await ts.write_turns([a.call("date"), a.call("ok"), a.answer(), b.call("currency"), b.call("ok")])
    first = await watch.look(tid)
    assert first.news and first.turns_read == 5
    assert await watch.pending(tid, since=0.0) == await full.pending_failures(tid) == 2
    idle = await watch.look(tid)
    assert (idle.news, idle.new_turns, idle.turns_read, idle.new_feedback) == (False, 0, 0, 0)
    # the next turn of an open session: only it is read, and its tool error counts
    await ts.write_turns([b.call("date")])
    await ts.write_turns([b.call("ok")])
    step = await watch.look(tid)
    assert (step.news, step.new_turns, step.turns_read) == (True, 2, 2)
    assert await watch.pending(tid, since=0.0) == await full.pending_failures(tid) == 3
    # feedback is news without a turn: a bad score on the answer turn
    await FeedbackStore(db).add(tenant_id=tid, session_id="ses_a", turn_id="turn_ses_a_2", score=-1.0, text=None)
    fb = await watch.look(tid)
    assert (fb.news, fb.turns_read, fb.new_feedback) == (True, 0, 1)
    assert await watch.pending(tid, since=0.0) == await full.pending_failures(tid) == 4
    assert not (await watch.look(tid)).news


async def test_a_late_turn_with_an_old_created_at_is_still_seen(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tid = await _tenant(db)
    ts = TrajectoryStore(db)
    early, now = AgentSession(tid, "ses_spooled"), AgentSession(tid, "ses_live")
    served = time.time() - 600  # served ten minutes ago; its second turn reaches the store only now
    await ts.write_turns([early.call("date", created_at=served)])
    await ts.write_turns([now.call("ok"), now.call("ok")])
    watch, full = _watch(db), _evolver(db, tmp_path)
    await watch.look(tid)
    assert await watch.pending(tid, since=0.0) == 0
    newest_served = await _newest_created_at(db, tid)
    await ts.write_turns([early.call("ok", created_at=served + 5)])  # e.g. replayed from another process's spool
    # nothing newer was served: a watch by created_at would not have looked again
    assert await _newest_created_at(db, tid) == newest_served
    look = await watch.look(tid)
    assert (look.news, look.turns_read) == (True, 1)
    assert await watch.pending(tid, since=0.0) == await full.pending_failures(tid) == 1


async def _newest_created_at(database: Database, tenant_id: str) -> float:
    async with database.engine.connect() as conn:
        return float((await conn.execute(sa.select(sa.func.max(t.turns.c.created_at))
                                         .where(t.turns.c.tenant_id == tenant_id))).scalar_one())


async def test_a_restart_reads_the_lookback_once(db: Database) -> None:  # noqa: F811
    tid = await _tenant(db)
    ts = TrajectoryStore(db)
    sessions = [AgentSession(tid, f"ses_{i}") for i in range(4)]
    await ts.write_turns([s.call(r) for s in sessions for r in ("date", "ok")] + [s.answer() for s in sessions])
    before = _watch(db)
    await before.look(tid)
    counted = await before.pending(tid, since=0.0)
    assert counted == 4
    after = _watch(db)  # a new process: nothing kept but the store
    first = await after.look(tid)
    assert first.full and first.turns_read == 12 and after.kept(tid) == 12
    assert await after.pending(tid, since=0.0) == counted
    again = await after.look(tid)
    assert not again.news and again.turns_read == 0


async def test_turns_leave_the_lookback_as_the_full_mine_drops_them(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tid = await _tenant(db)
    ts = TrajectoryStore(db)
    old, recent = AgentSession(tid, "ses_old"), AgentSession(tid, "ses_recent")
    await ts.write_turns([old.call("date", created_at=time.time() - 50), old.call("ok", created_at=time.time() - 49),
                          recent.call("currency"), recent.call("ok")])
    watch, full = _watch(db, lookback_s=30.0), _evolver(db, tmp_path, lookback_s=30.0)
    await watch.look(tid)
    assert watch.kept(tid) == 2  # the old session was served before the window
    assert await watch.pending(tid, since=0.0) == await full.pending_failures(tid) == 1


class Clock:
    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped


def _scenario(tenant_id: str) -> Iterator[list[TurnRecord] | tuple[str, str, float]]:
    """Steps of a day's traffic: batches of turns as the recorder writes them, and feedback
    (session, turn, score). The same every call."""
    live = [AgentSession(tenant_id, f"ses_{i}") for i in range(6)]
    yield [live[0].call("date"), live[1].call("ok")]
    yield [live[0].call("ok"), live[1].call("currency")]
    yield [live[1].call("ok"), live[0].answer(), live[2].call("date")]
    yield [live[2].call("date")]  # the third tool error visible: the trigger
    yield ("ses_1", "turn_ses_1_2", -1.0)  # a bad score on a turn no tool error explains
    yield [live[2].call("ok"), live[3].call("date")]
    yield [live[3].call("ok")]  # three new failures since the evolution
    yield [live[4].call("currency")]
    late = live[4].call("ok")  # served now, written after newer turns (another process's spool)
    yield [live[5].call("date"), live[5].call("ok")]
    yield [late]
    yield [live[5].call("date"), live[5].call("ok"), live[5].answer()]


async def _play(database: Database, tick: Any, tenant_id: str) -> list[tuple[int, str, int]]:
    fired = []
    ts, fs = TrajectoryStore(database), FeedbackStore(database)
    for step, what in enumerate(_scenario(tenant_id)):
        if isinstance(what, tuple):
            sid, turn_id, score = what
            await fs.add(tenant_id=tenant_id, session_id=sid, turn_id=turn_id, score=score, text=None)
        else:
            await ts.write_turns(what)
        fired += [(step, r.failures) for r in await tick()]
    triggers = [e["trigger"] for e in reversed(await EvolutionStore(database).evolutions(tenant_id))]
    return [(step, trigger, failures) for (step, failures), trigger in zip(fired, triggers, strict=True)]


async def test_the_trigger_fires_at_the_same_turns_as_the_full_re_mine(tmp_path: Path) -> None:
    """Two stores get the same traffic: one loop counts with the watch, the other mines the
    whole lookback at every tick (what the loop did before); the evolutions come after the
    same steps, for the same triggers and failures."""
    settings = {"trigger_failures": 3, "interval_s": 3_600.0, "min_support": 2, "optimize_context": False,
                "optimize_descriptions": False}
    watched = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/watched.db"))
    mined = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/mined.db"))
    try:
        loop = EvolverLoop(_evolver(watched, tmp_path / "w", **settings))
        reference = _evolver(mined, tmp_path / "m", **settings)
        started = time.time()

        async def full_tick() -> list[Any]:
            out = []
            for tid, name in await reference.tenants():
                last = await reference.store.last_evolution_at(tid)
                pending = await reference.pending_failures(tid, since=last)
                due = time.time() - max(last, started) >= reference.settings.interval_s
                if pending >= reference.settings.trigger_failures or (pending and due):
                    out.append(await reference.evolve(name, trigger="failures" if not due else "interval"))
            return out

        a = await _play(watched, loop.tick, await _tenant(watched))
        b = await _play(mined, full_tick, await _tenant(mined))
        assert a == b
        assert [(step, trigger) for step, trigger, _ in a] == [(3, "failures"), (6, "failures"), (10, "failures")]
        assert all(r.status == "done" for r in loop.reports)
    finally:
        await watched.close()
        await mined.close()


def _digest(m: Any) -> tuple[Any, ...]:
    """What an evolution reads of a mining result: each group's cases, and the good sample."""
    groups = [(g.key, g.kind, g.message, [(c.turn_id, c.at, c.request, c.calls, c.target) for c in g.cases])
              for g in m.groups]
    return groups, [(c.turn_id, c.request, c.calls) for c in m.good]


async def test_an_evolution_mines_from_the_watch_what_a_full_read_gives(db: Database) -> None:  # noqa: F811
    """At every step of a day's traffic, the watch's mining result (what the loop's evolutions
    read) equals a full read of the lookback: the same groups, cases and good sample."""
    from evolver.mining import mine

    tid = await _tenant(db)
    ts, fs = TrajectoryStore(db), FeedbackStore(db)
    old = AgentSession(tid, "ses_old")  # served before the window: in neither
    await ts.write_turns([old.call("date", created_at=time.time() - 7_200)])
    watch = _watch(db, lookback_s=3_600.0)
    for what in _scenario(tid):
        if isinstance(what, tuple):
            sid, turn_id, score = what
            await fs.add(tenant_id=tid, session_id=sid, turn_id=turn_id, score=score, text=None)
        else:
            await ts.write_turns(what)
        await watch.look(tid)
        got = watch.mined(tid, good_sample=4)
        full = await mine(ts, fs, tid, time.time() - 3_600.0, good_sample=4)
        assert _digest(got) == _digest(full)
    assert len(got.groups) >= 2 and len(got.good) == 4
    # the cases handed out are copies: an evolution that edits one leaves the watch as it was
    got.groups[0].cases[0].request["messages"].append({"role": "user", "content": "edited"})
    assert _digest(watch.mined(tid, good_sample=4)) == _digest(full)
