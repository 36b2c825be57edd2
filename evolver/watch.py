"""Incremental failure mining: what the loop's trigger counts, kept between polls.

Every poll the loop asks how many failure cases became visible since the last
evolution and are not yet used by a proposal (`Evolver.pending_failures`).
Mining the whole lookback for that re-reads and decodes every turn of the last
day each time. A `FailureWatch` keeps, per tenant, the main answered turns of
the lookback (only the columns mining reads), the feedback on their sessions,
and each session's cases. A look reads only the turns written since the last
one, by `recorded_at` (when the row was written, by the database's clock: a
turn that arrives late, from the spool or another process, with an old
`created_at`, is still seen), and the feedback stored since then; the cases of
the sessions they touch are derived again, the others kept.

Invariant: `pending(tenant, since)` is what `Evolver.pending_failures(tenant,
since)` would answer at that moment: the same window (turns served within
`lookback_s` of now), the same cases (`cases_from_session` on the same turns
and feedback), the same used turns (the newest proposals' provenance).

A new process starts with one full read, then is incremental. A write
transaction stamps its rows before it commits, so rows may become visible out
of order: each look lists the ids written in the last `settle_s` seconds before
its newest mark again (an index-only read) and reads in full only the ids it
has not seen.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from evolver.cases import Case, cases_from_session
from evolver.mining import Mined, assemble, good_turns
from store.evolution import EvolutionStore
from store.feedback import FeedbackStore
from store.trajectories import TrajectoryStore

# How long a written row may stay invisible (its transaction not yet committed) after its stamp.
SETTLE_S = 10.0
_SESSIONS_PER_READ = 500


@dataclass(frozen=True, slots=True)
class Look:
    """What one look read: `news` is whether anything was written since the last one."""

    full: bool  # the first look of this process: the whole lookback read
    listed: int  # turn ids listed: the new ones and those seen within the settle window
    new_turns: int  # turn rows written since the last look (of any type or status)
    turns_read: int  # of those, the rows read and decoded: main answered turns within the lookback
    new_feedback: int

    @property
    def news(self) -> bool:
        return self.full or self.new_turns > 0 or self.new_feedback > 0


@dataclass
class _Session:
    turns: dict[str, dict[str, Any]] = field(default_factory=dict)  # turn id -> mining row
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)  # feedback id -> row
    # the session's failure cases and its turns that went well; None: derive again
    cases: list[Case] | None = None
    good: list[Case] | None = None
    first: float = float("inf")  # when its first kept turn was served

    def derive(self) -> tuple[list[Case], list[Case]]:
        if self.cases is None or self.good is None:
            turns = sorted(self.turns.values(), key=lambda r: (r["idx"], r["created_at"]))
            fb = list(self.feedback.values())
            self.cases = cases_from_session(turns, fb)
            self.good = good_turns(str(turns[0]["session_id"]), turns, self.cases, fb) if turns else []
        return self.cases, self.good


@dataclass
class _Marks:
    """Where the reads of one table stand: the newest stamp seen, and the ids seen close to it."""

    newest: float | None = None
    recent: dict[str, float] = field(default_factory=dict)  # id -> stamp, within settle_s of newest

    def after(self, settle_s: float) -> float:
        return float("-inf") if self.newest is None else self.newest - settle_s

    def unseen(self, listed: Iterable[tuple[str, float]], settle_s: float) -> list[str]:
        """The listed ids not seen before; all of them are seen from now on."""
        fresh = []
        for rid, at in listed:
            if rid not in self.recent:
                fresh.append(rid)
                self.recent[rid] = at
            if self.newest is None or at > self.newest:
                self.newest = at
        floor = self.after(settle_s)
        self.recent = {rid: at for rid, at in self.recent.items() if at > floor}
        return fresh


@dataclass
class _Tenant:
    sessions: dict[str, _Session] = field(default_factory=dict)
    expiry: list[tuple[float, str, str]] = field(default_factory=list)  # heap of (created_at, session, turn)
    turns: _Marks = field(default_factory=_Marks)
    feedback: _Marks = field(default_factory=_Marks)


def _share(session: _Session, row: dict[str, Any]) -> None:
    """Hold the messages and tools a turn's request repeats from the session's previous turn once.

    An agent's request carries the whole conversation and the tool schemas again at every
    turn: kept as decoded, a session's turns hold O(turns^2) messages. Equal values are
    replaced by the previous turn's objects (read only, here and by mining).
    """
    earlier = [r for r in session.turns.values() if r["idx"] < row["idx"]]
    request = row.get("request")
    if not earlier or not isinstance(request, dict):
        return
    prev = max(earlier, key=lambda r: r["idx"]).get("request")
    if not isinstance(prev, dict):
        return
    if "tools" in request and request["tools"] == prev.get("tools"):
        request["tools"] = prev["tools"]
    msgs, before = request.get("messages"), prev.get("messages")
    if isinstance(msgs, list) and isinstance(before, list):
        for i, (m, b) in enumerate(zip(msgs, before)):
            if m != b:
                break
            msgs[i] = b


def _copied(case: Case) -> Case:
    return dataclasses.replace(case, request=copy.deepcopy(case.request))


class FailureWatch:
    """Failure cases of each tenant, kept up to date by reading only what was written since."""

    def __init__(self, trajectories: TrajectoryStore, feedback: FeedbackStore, evolutions: EvolutionStore,
                 *, lookback_s: float, settle_s: float = SETTLE_S,
                 wall: Callable[[], float] = time.time) -> None:
        self.trajectories = trajectories
        self.feedback = feedback
        self.evolutions = evolutions
        self.lookback_s = lookback_s
        self.settle_s = settle_s
        self.wall = wall  # the store's clock (timestamps are wall-clock), not the loop's
        self._tenants: dict[str, _Tenant] = {}

    async def look(self, tenant_id: str) -> Look:
        """Read what was written for the tenant since the last look (everything, the first time)."""
        state = self._tenants.get(tenant_id)
        if state is None:
            state = self._tenants[tenant_id] = _Tenant()
            return await self._first_look(tenant_id, state)
        window = self.wall() - self.lookback_s
        listed = await self.trajectories.recorded_after(tenant_id, state.turns.after(self.settle_s))
        fresh = state.turns.unseen(listed, self.settle_s)
        rows = await self.trajectories.mining_rows(tenant_id, created_from=window, ids=fresh) if fresh else []
        await self._add_turns(state, rows)
        fb_listed = await self.feedback.stored_after(tenant_id, state.feedback.after(self.settle_s))
        fb_fresh = state.feedback.unseen(fb_listed, self.settle_s)
        for f in await self.feedback.by_ids(fb_fresh) if fb_fresh else []:
            self._add_feedback(state, f)
        # a new row that is not read (another turn type, an error, served before the window) is news too
        return Look(False, len(listed), len(fresh), len(rows), len(fb_fresh))

    async def _first_look(self, tenant_id: str, state: _Tenant) -> Look:
        # the marks first: a row committed after them is listed again by the next look
        newest = await self.trajectories.newest_recorded_at(tenant_id)
        if newest is not None:
            state.turns.unseen(await self.trajectories.recorded_after(tenant_id, newest - self.settle_s),
                               self.settle_s)
        fb_newest = await self.feedback.latest_at(tenant_id)
        if fb_newest:
            state.feedback.unseen(await self.feedback.stored_after(tenant_id, fb_newest - self.settle_s),
                                  self.settle_s)
        rows = await self.trajectories.mining_rows(tenant_id, created_from=self.wall() - self.lookback_s)
        await self._add_turns(state, rows)
        return Look(True, len(state.turns.recent), len(rows), len(rows), 0)

    async def _add_turns(self, state: _Tenant, rows: list[dict[str, Any]]) -> None:
        entering: list[str] = []
        for row in rows:
            sid, tid = str(row["session_id"]), str(row["id"])
            session = state.sessions.get(sid)
            if session is None:
                session = state.sessions[sid] = _Session()
                entering.append(sid)
            if tid in session.turns:
                continue  # read by the first look and listed again
            _share(session, row)
            session.turns[tid] = row
            session.cases = None
            session.first = min(session.first, float(row["created_at"]))
            heapq.heappush(state.expiry, (float(row["created_at"]), sid, tid))
        # a session new to the watch brings all its feedback, filed before or after its turns
        for i in range(0, len(entering), _SESSIONS_PER_READ):
            for f in await self.feedback.for_sessions(entering[i:i + _SESSIONS_PER_READ]):
                self._add_feedback(state, f)

    @staticmethod
    def _add_feedback(state: _Tenant, f: dict[str, Any]) -> None:
        session = state.sessions.get(str(f["session_id"])) if f.get("session_id") else None
        if session is None or str(f["id"]) in session.feedback:
            return  # feedback on no session mining reads, or read already
        session.feedback[str(f["id"])] = f
        session.cases = None

    def _expire(self, state: _Tenant) -> None:
        """Drop turns served before the lookback window; their sessions' cases are derived again."""
        window = self.wall() - self.lookback_s
        while state.expiry and state.expiry[0][0] < window:
            _, sid, tid = heapq.heappop(state.expiry)
            session = state.sessions.get(sid)
            if session is None or session.turns.pop(tid, None) is None:
                continue
            session.cases = None
            if not session.turns:
                del state.sessions[sid]
            else:
                session.first = min(float(r["created_at"]) for r in session.turns.values())

    async def pending(self, tenant_id: str, since: float) -> int:
        """Failure cases that became visible since `since` and that no proposal used yet.

        What `Evolver.pending_failures` counts, from what the looks read (call `look` first).
        """
        state = self._tenants.get(tenant_id)
        if state is None:
            return 0
        self._expire(state)
        used = await self.evolutions.used_turns(tenant_id)
        n = 0
        for session in state.sessions.values():
            cases, _ = session.derive()
            n += sum(1 for c in cases if c.at >= since and c.turn_id not in used)
        return n

    def mined(self, tenant_id: str, *, good_sample: int = 12, seed: int = 0) -> Mined:
        """What `evolver.mining.mine` over the lookback would give now, from what the looks
        read (call `look` first): the same failure groups and the same good sample.

        Each case's request is a copy (the kept rows are shared between a session's turns and
        stay read only). `turns_seen` counts the main answered turns kept.
        """
        state = self._tenants.get(tenant_id)
        if state is None:
            return assemble([], 0, good_sample=good_sample, seed=seed)
        self._expire(state)
        ordered = sorted(state.sessions.values(), key=lambda s: s.first)
        mined = assemble([s.derive() for s in ordered], self.kept(tenant_id),
                         good_sample=good_sample, seed=seed)
        for g in mined.groups:
            g.cases = [_copied(c) for c in g.cases]
        mined.good = [_copied(c) for c in mined.good]
        return mined

    def kept(self, tenant_id: str) -> int:
        """How many turns the watch holds for the tenant (the lookback's main answered turns)."""
        state = self._tenants.get(tenant_id)
        return sum(len(s.turns) for s in state.sessions.values()) if state else 0
