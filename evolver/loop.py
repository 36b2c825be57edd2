"""One evolution for one tenant, and the loop that decides when to run one.

An evolution: take the tenant's lock (one evolution per tenant at a time, also
across processes), judge recent turns if a judge is configured, mine the
failures not yet used by an earlier proposal, draft edits (the evolver model,
or the offline rule-based miner), pass every draft through the one safety
check (`evolver.safety.check_ops`: a refused draft is kept as an `invalid`
proposal with the reason and never replayed), gate the others by replay,
apply the ones that pass as skill revisions by `evolver` (raising the
generation), and keep the rest as rejected proposals with their scores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from evolver import offline
from evolver.checks import Check, keep_check, refusal_checks, restate
from evolver.context import ContextOptimizer
from evolver.descriptions import DescriptionDraft, llm_draft, rule_drafts
from evolver.edits import apply_ops, candidate_skills, ops_to_json
from evolver.errors import EvolverError, ProposalRejected
from evolver.gate import Gate
from evolver.judge import Judge
from evolver.llm import ChatModel
from evolver.mining import FailureGroup, answers_an_error, failure_count, mine
from evolver.offline import Draft
from evolver.replay import Replayer
from evolver.safety import check_ops
from evolver.synthesis import synthesize
from evolver.watch import FailureWatch
from store import tables as t
from store.database import Database
from store.evolution import EvolutionStore, Proposal
from store.feedback import FeedbackStore
from store.ids import new_id
from store.settings import EvolverSettings
from store.skills import SkillLibrary
from store.tool_overlays import ToolOverlayStore
from store.trajectories import TrajectoryStore

log = logging.getLogger("molt.evolver")


@dataclass
class EvolutionReport:
    tenant: str
    evolution_id: str | None
    status: str  # done | skipped | locked | failed
    failures: int = 0
    groups: int = 0
    proposals: list[dict[str, Any]] = field(default_factory=list)
    judged: int = 0
    cost: dict[str, int] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> list[dict[str, Any]]:
        return [p for p in self.proposals if p["status"] in ("accepted", "quarantined")]


class Evolver:
    def __init__(self, db: Database, library: SkillLibrary, replayer: Replayer, settings: EvolverSettings,
                 *, model: ChatModel | None = None, judge_model: ChatModel | None = None) -> None:
        self.db = db
        self.library = library
        self.replayer = replayer
        self.settings = settings
        self.model = model
        self.trajectories = TrajectoryStore(db)
        self.feedback = FeedbackStore(db)
        self.store = EvolutionStore(db)
        self.judge = (Judge(judge_model, self.feedback, votes=settings.judge_votes,
                            temperature=settings.judge_temperature) if judge_model else None)
        self.context = ContextOptimizer(self.store, replayer, model=model,
                                        children=settings.context_children)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def _groups(self, tenant_id: str, watch: FailureWatch | None = None
                      ) -> tuple[list[FailureGroup], list[Any], int, list[tuple[float, Check]]]:
        """The lookback's failure groups not yet used, the good sample, the turns seen and every
        recent refusal: read in full, or from `watch` (what it read since its last look)."""
        if watch is not None:
            await watch.look(tenant_id)
            mined = watch.mined(tenant_id, good_sample=self.settings.gate_keep_sample)
        else:
            mined = await mine(self.trajectories, self.feedback, tenant_id,
                               time.time() - self.settings.lookback_s,
                               good_sample=self.settings.gate_keep_sample)
        # every recent refusal, used by a proposal or not: what the turns that went well are judged by
        refusals = refusal_checks([c for g in mined.groups if g.kind == "tool_error" for c in g.cases])
        used = await self.store.used_turns(tenant_id)
        groups = []
        for g in mined.groups:
            g.cases = [c for c in g.cases if c.turn_id not in used]
            if g.cases:
                groups.append(g)
        groups.sort(key=lambda g: -len(g.cases))
        return groups, mined.good, mined.turns_seen, refusals

    async def pending_failures(self, tenant_id: str, since: float = 0.0) -> int:
        """Failure cases that became visible since `since` and that no proposal used yet.

        Whole sessions are mined (over the lookback) and each case counts by when
        its evidence arrived (`Case.at`): a tool error whose session began before
        `since`, or a complaint filed after its session's last turn, is still new.
        """
        groups, _, _, _ = await self._groups(tenant_id)
        return sum(1 for g in groups for c in g.cases if c.at >= since)

    async def _judge_recent(self, tenant_id: str) -> int:
        if self.judge is None:
            return 0
        turns = await self.trajectories.turns_since(time.time() - self.settings.lookback_s, tenant_id=tenant_id)
        sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for turn in turns:
            sessions[str(turn["session_id"])].append(turn)
        n = 0
        for sturns in sessions.values():
            n += await self.judge.judge_session(sorted(sturns, key=lambda x: x["idx"]))
        return n

    async def _drafts(self, tenant: str, groups: list[FailureGroup]) -> tuple[list[Draft], list[dict[str, Any]]]:
        current = await self.library.current(tenant)
        serving = {n: ls.skill for n, ls in current.items()}
        if self.model is None:
            return offline.propose(groups, serving, min_support=self.settings.min_support,
                                   max_drafts=self.settings.max_proposals,
                                   wish_support=self.settings.wish_min_support), []
        drafts, invalid = [], []
        due = [g for g in groups
               if len(g.cases) >= offline.support_needed(g, self.settings.min_support, self.settings.wish_min_support)]
        for g in due[: self.settings.max_proposals]:
            relevant = [s for s in serving.values() if s.serving and set(s.tools) & set(g.tools)] or \
                [s for s in serving.values() if s.serving][:20]
            try:
                drafts.append(await synthesize(self.model, g, relevant))
            except ProposalRejected as exc:
                log.warning("evolver: proposal rejected before the gate: %s", exc)
                invalid.append({"reason": str(exc), "turn_ids": g.turn_ids})
            except EvolverError as exc:
                log.warning("evolver: model call failed: %s", exc)
        return drafts, invalid

    async def evolve(self, tenant: str, *, trigger: str = "manual",
                     watch: FailureWatch | None = None) -> EvolutionReport:
        """One evolution of `tenant`'s skills (and context, descriptions). `watch`: mine from
        it (the loop's, which only it looks at) instead of reading the whole lookback."""
        ten = await self.library.tenant(tenant)
        if not await self.store.try_lock(ten.id, self.holder, ttl_s=900):
            return EvolutionReport(tenant, None, "locked")
        eid = await self.store.start_evolution(ten.id, trigger)
        report = EvolutionReport(tenant, eid, "done")
        try:
            report.judged = await self._judge_recent(ten.id)
            groups, good, _, refusals = await self._groups(ten.id, watch)
            report.failures, report.groups = failure_count(groups), len(groups)
            drafts, invalid = await self._drafts(tenant, groups)
            for bad in invalid:
                p = Proposal(new_id("prop"), ten.id, eid, time.time(), "llm", "invalid", [], bad["reason"],
                             bad["turn_ids"], None, None)
                await self.store.add_proposal(p)
                report.proposals.append({"id": p.id, "status": "invalid", "reason": bad["reason"]})
            gate = Gate(self.replayer, tenant, minibatch=self.settings.gate_minibatch,
                        tolerance=self.settings.gate_tolerance)
            # non-regression on first tries: a retry after a tool error is a fix's evidence
            keep = [restate(c, g.at, refusals) for g in good if not answers_an_error(g.request)
                    for c in [keep_check(g)] if c]
            for d in drafts:
                report.proposals.append(await self._gate_and_apply(tenant, ten.id, eid, d, gate, keep))
            if self.settings.optimize_descriptions:
                report.proposals += await self._descriptions(tenant, ten.id, eid, groups, keep)
            # the context block, like the skills, learns from recurring failures only: one failure
            # is not yet a pattern (and each step replays a dozen turns)
            recurring = [g for g in groups if len(g.cases) >= self.settings.min_support]
            if self.settings.optimize_context and recurring:
                serving = await self.library.current(tenant)
                covered = frozenset(s for n, ls in serving.items() if ls.skill.serving and ls.skill.origin == "evolver"
                                    for s in [offline.subject_of(n)] if s)
                ctx = await self.context.step(tenant, ten.id, recurring, good, covered=covered)
                report.context = dataclasses.asdict(ctx)
            if self.model is not None:
                report.cost = self.model.cost.as_dict()
        except Exception as exc:
            report.status = "failed"
            log.exception("evolution %s failed: %s", eid, type(exc).__name__)
            raise
        finally:
            await self.store.finish_evolution(eid, report.status, {
                "failures": report.failures, "groups": report.groups, "judged": report.judged,
                "proposals": report.proposals, "cost": report.cost, "context": report.context})
            await self.store.unlock(ten.id, self.holder)
        return report

    async def _gate_and_apply(self, tenant: str, tenant_id: str, eid: str, d: Draft, gate: Gate,
                              keep: list[Any]) -> dict[str, Any]:
        current = {n: ls.skill for n, ls in (await self.library.current(tenant)).items()}
        p = Proposal(new_id("prop"), tenant_id, eid, time.time(), d.source, "pending", ops_to_json(d.ops),
                     d.reason, d.turn_ids, None, None)
        try:
            check_ops(d.ops)  # whatever wrote the draft: the miner or a model
            candidate_skills(d.ops, current)
        except ProposalRejected as exc:
            p.status, p.scores = "invalid", {"reason": str(exc)}
            await self.store.add_proposal(p)
            return {"id": p.id, "status": p.status, "reason": str(exc)}
        await self.store.add_proposal(p)
        # context lines about what the skill states give way to it (replayed without them)
        pruned = await self.context.without(tenant_id, d.subjects) if self.settings.optimize_context else None
        result = await gate.judge(p.id, d.checks, keep, context=pruned.id if pruned else None)
        if not result.accepted:
            await self.store.update_proposal(p.id, status="rejected", scores=result.as_dict())
            log.info("evolver: proposal %s rejected: %s", p.id, result.reason)
            return {"id": p.id, "status": "rejected", "reason": result.reason, "scores": result.as_dict()}
        revs = await apply_ops(self.library, tenant, d.ops)
        status = "quarantined" if any(r.status == "quarantined" for r in revs) else "accepted"
        await self.store.update_proposal(p.id, status=status, scores=result.as_dict(),
                                         revisions=[r.id for r in revs])
        log.info("evolver: proposal %s %s (%s)", p.id, status, result.reason)
        out: dict[str, Any] = {"id": p.id, "status": status, "reason": result.reason,
                               "scores": result.as_dict(), "skills": [op.name for op in d.ops],
                               "revisions": [r.id for r in revs]}
        if pruned is not None and status == "accepted":
            active = await self.store.add_context(tenant_id, pruned.text, parent=pruned.id, status="active",
                                                  scores={"reason": (pruned.scores or {}).get("reason"),
                                                          "proposal": p.id})
            out["context"] = active.version
        return out

    async def _descriptions(self, tenant: str, tenant_id: str, eid: str, groups: list[FailureGroup],
                            keep: list[Any]) -> list[dict[str, Any]]:
        """Rewritten parameter descriptions for recurring argument errors, each gated by replay
        (against what is served now, skills accepted above included) and served as overlays."""
        s = self.settings
        out: list[dict[str, Any]] = []
        drafts: list[DescriptionDraft] = []
        if self.model is None:
            drafts = rule_drafts(groups, min_support=s.min_support, max_drafts=s.max_proposals)
        else:
            for g in [g for g in groups if g.kind == "tool_error" and len(g.cases) >= s.min_support][
                    : s.max_proposals]:
                try:
                    d = await llm_draft(self.model, g)
                except ProposalRejected as exc:
                    p = Proposal(new_id("prop"), tenant_id, eid, time.time(), "llm-descriptions", "invalid",
                                 [], str(exc), g.turn_ids, {"reason": str(exc)}, None)
                    await self.store.add_proposal(p)
                    out.append({"id": p.id, "status": "invalid", "reason": str(exc)})
                    continue
                except EvolverError as exc:
                    log.warning("evolver: model call failed: %s", exc)
                    continue
                if d is not None:
                    drafts.append(d)
        for d in drafts:
            out.append(await self._gate_description(tenant, tenant_id, eid, d, keep))
        return out

    async def _gate_description(self, tenant: str, tenant_id: str, eid: str, d: DescriptionDraft,
                                keep: list[Any]) -> dict[str, Any]:
        p = Proposal(new_id("prop"), tenant_id, eid, time.time(), d.source, "pending", [], d.reason,
                     d.turn_ids, None, None)
        await self.store.add_proposal(p)
        overlays = ToolOverlayStore(self.db)
        cands = [await overlays.add_candidate(tenant_id, r.tool, r.param, r.description, base=r.base,
                                              proposal_id=p.id, reason=d.reason) for r in d.rewrites]
        # a gate of its own: what is current may have changed with a skill accepted before
        gate = Gate(self.replayer, tenant, minibatch=self.settings.gate_minibatch,
                    tolerance=self.settings.gate_tolerance)
        result = await gate.judge(p.id, d.checks, keep)
        shown = [{"id": c.id, "tool": c.tool, "param": c.param, "version": c.version,
                  "description": c.description} for c in cands]
        if not result.accepted:
            await overlays.reject([c.id for c in cands])
            await self.store.update_proposal(p.id, status="rejected", scores=result.as_dict())
            log.info("evolver: description proposal %s rejected: %s", p.id, result.reason)
            return {"id": p.id, "status": "rejected", "reason": result.reason, "scores": result.as_dict(),
                    "overlays": shown}
        for c in cands:
            await overlays.activate(c.id)
        await self.store.update_proposal(p.id, status="accepted", scores=result.as_dict(),
                                         revisions=[c.id for c in cands])
        log.info("evolver: description proposal %s accepted (%s)", p.id, result.reason)
        return {"id": p.id, "status": "accepted", "reason": result.reason, "scores": result.as_dict(),
                "overlays": shown}

    async def tenants(self) -> list[tuple[str, str]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.tenants.c.id, t.tenants.c.name))).all()
        return [(str(r[0]), str(r[1])) for r in rows]


class EvolverLoop:
    """Runs evolutions on a trigger: N new failures, or every interval if there are any.

    `clock` is the loop's notion of now (a test or a simulation passes its own;
    the store's timestamps stay wall-clock). `on_change` callbacks get the
    tenant name after an evolution changed what is served (a skill accepted, a
    context activated), so this process serves it from the next request.
    """

    def __init__(self, evolver: Evolver, *, tenants: Collection[str] = (),
                 clock: Callable[[], float] = time.time,
                 on_change: Sequence[Callable[[str], Awaitable[None]]] = ()) -> None:
        self.evolver = evolver
        self.tenants = frozenset(tenants)  # tenant names this loop evolves; empty: all of them
        self.clock = clock
        self.on_change = list(on_change)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one tick at a time (the background one, or one asked for)
        self.reports: list[EvolutionReport] = []
        self._since = clock()  # the interval counts from the loop's start at the earliest
        # what each tenant's turns and feedback hold, read incrementally (outcomes and complaints
        # come after a session's last turn: new feedback is news as new turns are)
        self.watch = FailureWatch(evolver.trajectories, evolver.feedback, evolver.store,
                                  lookback_s=evolver.settings.lookback_s)
        self._pending: dict[str, int] = {}  # tenant id -> failure cases found at the last look with news

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="molt-evolver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def tick(self, only: Collection[str] | None = None) -> list[EvolutionReport]:
        """Evolve each tenant that has N new failures, or any failure and T elapsed.

        The count is taken again only when a tenant has turns or feedback written
        since the last look (`evolver.watch`: only those are read); otherwise the
        count from that look stands. `only`: these tenant names
        (of those the loop evolves); None: all of them.
        """
        async with self._lock:
            return await self._tick(only)

    async def _tick(self, only: Collection[str] | None) -> list[EvolutionReport]:
        s = self.evolver.settings
        out = []
        for tid, name in await self.evolver.tenants():
            if (self.tenants and name not in self.tenants) or (only is not None and name not in only):
                continue
            last = await self.evolver.store.last_evolution_at(tid)
            if (await self.watch.look(tid)).news:
                self._pending[tid] = await self.watch.pending(tid, since=last)
            pending = self._pending.get(tid, 0)
            if not pending:
                continue
            due = self.clock() - max(last, self._since) >= s.interval_s
            if pending >= s.trigger_failures or due:
                trigger = "failures" if pending >= s.trigger_failures else "interval"
                report = await self.evolver.evolve(name, trigger=trigger, watch=self.watch)
                out.append(report)
                if report.status == "done":
                    self._pending[tid] = 0
                if report.accepted or report.context.get("activated"):
                    for callback in self.on_change:
                        await callback(name)
        self.reports += out
        return out

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad evolution
                log.error("evolver loop: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.evolver.settings.poll_s)
