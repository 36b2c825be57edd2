"""What the evolver loop's trigger costs per poll: the full re-mine against the incremental watch.

    python -m bench.mining_trigger [--turns 1000 10000] [--fail 0.2] [--repeat 5]

Fills a SQLite store with N turns of synthetic agent sessions over a day (4-12
tool-calling turns each, then an answer; generic tools: a ticket tracker, a
calendar, mail, an order search), a share `--fail` of the calls refused in the
formats real tools use (an OpenAI error envelope, a FastAPI 422 body, plain
text), and a verifier score on one session in ten. Turns are written through
`TrajectoryStore.write_turns`, as the recorder writes them.

Then, per N, the median wall and CPU time of:
- the full mine: `Evolver.pending_failures`, what the loop ran at every poll
  with new traffic (read and decode the whole lookback, derive every case);
- the watch's first look (a new process: one full read) and its count;
- an idle poll (no new turns: list the ids written in the settle window);
  "steady" with the fill stamped as written when served, spread over the day
  (a store filled over a day); "burst" right after all N were written, when
  every id is within the settle window;
- a poll after 10 new turns (continuing open sessions), look and count;
- what an evolution mines (failure groups, cases, the good sample): a full
  read of the lookback (`evolver.mining.mine`), against the loop's watch
  (a look, then `FailureWatch.mined`).
It checks that the watch counts what the full mine counts, and prints the
SQL plans of the watch's reads at the largest N (EXPLAIN QUERY PLAN).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from evolver.loop import Evolver
from evolver.mining import mine
from evolver.replay import HTTPReplayer
from evolver.watch import FailureWatch
from store import tables as t
from store.database import Database
from store.feedback import FeedbackStore
from store.keys import KeyStore
from store.records import TurnRecord
from store.settings import EvolverSettings, SkillsSettings, StoreSettings
from store.skills import SkillLibrary
from store.trajectories import TrajectoryStore

DAY = 86_400.0
TOOLS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {  # name -> (arguments when right, arguments when refused, what the tool answers when refused)
    "create_ticket": ({"title": "Printer down", "priority": "high"}, {"title": "Printer down", "priority": "urgent"},
                      json.dumps({"error": {"message": "priority must be one of: low, normal, high",
                                            "param": "priority", "type": "invalid_request_error"}})),
    "schedule_call": ({"date": "2026-12-03", "with": "ops"}, {"date": "12/03/2026", "with": "ops"},
                      "error: date must be YYYY-MM-DD, got 12/03/2026"),
    "send_email": ({"to": "bob@example.com", "body": "hi"}, {"to": "bob", "body": "hi"},
                   json.dumps({"detail": [{"loc": ["body", "to"], "msg": "value is not a valid email address",
                                           "type": "value_error", "input": "bob"}]})),
    "search_orders": ({"query": "late shipments", "limit": 20}, {"query": "late shipments", "limit": 20}, ""),
}
SCHEMAS = [{"type": "function", "function": {"name": n, "description": f"{n.replace('_', ' ')}.",
                                              "parameters": {"type": "object", "properties": {
                                                  k: {"type": "string"} for k in good}}}}
           for n, (good, _, _) in TOOLS.items()]


class Session:
    """An agent loop: each turn calls a tool; the next request carries the tool's answer."""

    def __init__(self, tenant_id: str, sid: str, rng: random.Random) -> None:
        self.tenant_id, self.sid, self.rng = tenant_id, sid, rng
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": f"Sort out the backlog ({sid})"}]
        self.idx = 0

    def call(self, at: float, fail: float) -> TurnRecord:
        name = self.rng.choice(list(TOOLS))
        good, bad, error = TOOLS[name]
        refused = bool(error) and self.rng.random() < fail
        cid = f"call_{self.sid}_{self.idx}"
        call = {"id": cid, "type": "function",
                "function": {"name": name, "arguments": json.dumps(bad if refused else good)}}
        rec = self._turn(at, [call], None)
        self.messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": cid,
                           "content": error if refused else json.dumps({"ok": True, "id": cid})}]
        return rec

    def answer(self, at: float) -> TurnRecord:
        return self._turn(at, [], "All done.")

    def _turn(self, at: float, calls: list[dict[str, Any]], content: str | None) -> TurnRecord:
        rec = TurnRecord(
            id=f"turn_{self.sid}_{self.idx}", tenant_id=self.tenant_id, session_id=self.sid, idx=self.idx,
            turn_type="main", created_at=at, request_model="agent", stream=False,
            request={"model": "agent", "messages": [dict(m) for m in self.messages], "tools": SCHEMAS},
            response={"choices": [{"message": {"role": "assistant", "content": content,
                                               "tool_calls": calls or None}}]},
            tool_calls=calls or None, content=content)
        self.idx += 1
        return rec


async def fill(db: Database, tenant_id: str, n: int, fail: float, rng: random.Random
               ) -> tuple[list[Session], list[tuple[str, float]]]:
    """N turns of sessions spread over the last 23 hours; the sessions left open, and a verifier
    score (session id, when) on one closed session in ten."""
    now, batch, written = time.time(), [], 0
    open_sessions: list[Session] = []
    scored: list[tuple[str, float]] = []
    ts = TrajectoryStore(db)
    k = 0
    while written < n:
        s = Session(tenant_id, f"ses_{k:06d}", rng)
        k += 1
        start = now - 23 * 3600 * (1 - written / n)
        length = min(rng.randint(4, 12), n - written)
        for i in range(length - 1):
            batch.append(s.call(start + i * 2.0, fail))
        if length > 1 and rng.random() < 0.9:
            batch.append(s.answer(start + (length - 1) * 2.0))
            if rng.random() < 0.1:
                scored.append((s.sid, start + length * 2.0))
        else:
            batch.append(s.call(start + (length - 1) * 2.0, fail))
            open_sessions.append(s)
        written += length
        if len(batch) >= 256:
            await ts.write_turns(batch)
            batch = []
    await ts.write_turns(batch)
    return open_sessions, scored


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, Any]:
    """Median wall and CPU milliseconds of `repeat` runs, and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = await fn()
        walls.append((time.perf_counter() - w) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    return statistics.median(walls), statistics.median(cpus), out


async def run_size(n: int, fail: float, repeat: int, root: Path, explain: bool) -> dict[str, Any]:
    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{root}/n{n}.db"))
    try:
        rng = random.Random(n)
        tenant_id = (await KeyStore(db).ensure_tenant("bench")).id
        t0 = time.perf_counter()
        open_sessions, scored = await fill(db, tenant_id, n, fail, rng)
        fb = FeedbackStore(db)
        for sid, _ in scored:
            await fb.add(tenant_id=tenant_id, session_id=sid, turn_id=None, score=-1.0, text=None, source="verifier")
        filled_s = time.perf_counter() - t0
        library = SkillLibrary(db, SkillsSettings(seed_dir=None), root / f"data{n}")
        evolver = Evolver(db, library, HTTPReplayer("http://127.0.0.1:9", None), EvolverSettings())
        row: dict[str, Any] = {"turns": n, "fill_s": filled_s}

        row["full"] = await timed(lambda: evolver.pending_failures(tenant_id), max(1, repeat // 2))

        def watch() -> FailureWatch:
            return FailureWatch(evolver.trajectories, evolver.feedback, evolver.store,
                                lookback_s=evolver.settings.lookback_s)

        burst = watch()
        await burst.look(tenant_id)
        row["idle_burst"] = await timed(lambda: burst.look(tenant_id), repeat)
        # the steady state: the fill stamped as written when served (a store filled over the day)
        async with db.engine.begin() as conn:
            await conn.execute(t.turns.update().values(recorded_at=t.turns.c.created_at))
            await conn.execute(t.feedback.update().where(t.feedback.c.session_id == sa.bindparam("sid"))
                               .values(created_at=sa.bindparam("at")), [{"sid": s, "at": a} for s, a in scored])

        async def first_look() -> tuple[Any, int]:
            w = watch()
            look = await w.look(tenant_id)
            return look, await w.pending(tenant_id, since=0.0)

        row["first"] = await timed(first_look, max(1, repeat // 2))
        steady = watch()
        await steady.look(tenant_id)
        row["count_watch"] = await steady.pending(tenant_id, since=0.0)
        row["count_full"] = row["full"][2]
        row["idle"] = await timed(lambda: steady.look(tenant_id), repeat)

        pool = open_sessions or [Session(tenant_id, "ses_open", rng)]
        walls: list[float] = []
        cpus: list[float] = []
        pending = 0
        for _ in range(repeat):
            now = time.time()
            await evolver.trajectories.write_turns([rng.choice(pool).call(now, fail) for _ in range(10)])
            w, c = time.perf_counter(), time.process_time()
            look = await steady.look(tenant_id)
            pending = await steady.pending(tenant_id, since=0.0) if look.news else -1
            walls.append((time.perf_counter() - w) * 1e3)
            cpus.append((time.process_time() - c) * 1e3)
        row["after10"] = (statistics.median(walls), statistics.median(cpus), pending)
        row["after10_full"] = await evolver.pending_failures(tenant_id)
        # what an evolution mines (groups, cases, the good sample): a full read of the lookback,
        # or the loop's watch (a look, then what it holds)
        since = time.time() - evolver.settings.lookback_s
        row["mine_full"] = await timed(lambda: mine(evolver.trajectories, evolver.feedback, tenant_id,
                                                    since, good_sample=12), max(1, repeat // 2))

        async def watch_mined() -> Any:
            await steady.look(tenant_id)
            return steady.mined(tenant_id, good_sample=12)

        row["mine_watch"] = await timed(watch_mined, repeat)
        row["mine_same"] = ([(g.key, g.turn_ids) for g in row["mine_full"][2].groups]
                            == [(g.key, g.turn_ids) for g in row["mine_watch"][2].groups]
                            and [c.turn_id for c in row["mine_full"][2].good]
                            == [c.turn_id for c in row["mine_watch"][2].good])
        row["mine_cases"] = sum(len(g.cases) for g in row["mine_watch"][2].groups)
        row["plans"] = await explain_reads(db, steady, tenant_id) if explain else []
        return row
    finally:
        await db.close()


async def explain_reads(db: Database, watch: FailureWatch, tenant_id: str) -> list[tuple[str, list[str]]]:
    """EXPLAIN QUERY PLAN of each statement one poll with a new turn runs (captured as it runs)."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    s = Session(tenant_id, "ses_explain", random.Random(0))
    await TrajectoryStore(db).write_turns([s.call(time.time(), 0.0)])
    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await watch.look(tenant_id)
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    out = []
    async with db.engine.connect() as conn:
        for statement, params in seen:
            rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)).all()
            out.append((" ".join(statement.split())[:110], [str(r[-1]) for r in rows]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--fail", type=float, default=0.2, help="share of tool calls refused")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.turns:
            rows.append(asyncio.run(run_size(n, args.fail, args.repeat, Path(tmp), n == max(args.turns))))

    def ms(v: tuple[float, float, Any]) -> str:
        return f"{v[0]:8.1f} / {v[1]:7.1f}"

    print("\nms wall / ms CPU, median; SQLite (WAL), one tenant, lookback 24 h")
    print(f"{'turns':>7} | {'full mine (today)':>17} | {'watch first look':>17} | {'idle poll':>17} | "
          f"{'idle, burst':>17} | {'poll +10 turns':>17} | counts (watch = full)")
    for r in rows:
        same = r["count_watch"] == r["count_full"] and r["after10"][2] == r["after10_full"]
        print(f"{r['turns']:>7} | {ms(r['full'])} | {ms(r['first'])} | {ms(r['idle'])} | {ms(r['idle_burst'])} | "
              f"{ms(r['after10'])} | {r['count_watch']} = {r['count_full']}, "
              f"+10: {r['after10'][2]} = {r['after10_full']} {'ok' if same else 'DIFFER'}")
    print("  idle, burst: an idle poll right after all the turns were written (every id within the settle window)")
    print(f"\nWhat an evolution mines (groups, cases, good sample), ms wall / ms CPU, median\n"
          f"{'turns':>7} | {'full read':>17} | {'the watch':>17} | cases | same result")
    for r in rows:
        print(f"{r['turns']:>7} | {ms(r['mine_full'])} | {ms(r['mine_watch'])} | {r['mine_cases']:>5} | "
              f"{'yes' if r['mine_same'] else 'NO'}")
    for r in rows:
        if r["plans"]:
            print(f"\nSQL plans of one poll with a new turn, at {r['turns']} turns:")
            for statement, plan in r["plans"]:
                print(f"  {statement}\n    -> {'; '.join(plan)}")


if __name__ == "__main__":
    main()
