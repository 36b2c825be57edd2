"""Context optimization: molt's fast weights, one context block per tenant.

Our instantiation of reflective prompt evolution with a Pareto front
(ALGORITHMS.md section 3, GEPA): the tasks are the checks mined from recorded
turns (failures with a known fix, and turns that went well); a candidate
context is scored on each task by replaying it through serving with that
context (`X-Molt-Context`). Mutation is reflective: with an evolver model,
the model reads the failures and rewrites the block; without one, a rule line
distilled from each recurring failure is appended (or an unhelpful line is
dropped). Candidates are kept as `candidate` versions with their per-task
scores; the front is every candidate no other one dominates. A child becomes
the active version only if it is on the front, wins on the minibatch, and
beats the active one on the full task set without losing a turn that went
well.

Every line of every candidate passes the one safety check
(`evolver.safety.safe_lines`) before it is stored: a refused line is dropped
and reported with the reason (`ContextReport.refused`), so nothing the check
refuses is ever served. A rule line quotes what the tool said as data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evolver.checks import Check, evidence_check, keep_check
from evolver.errors import EvolverError
from evolver.llm import ChatModel
from evolver.mining import FailureGroup, render_group
from evolver.offline import main_constraint, slugify, unread_constraint
from evolver.replay import Replayer
from evolver.rules import line_for, state_constraint, state_wish, subject
from evolver.safety import MAX_LINE, Refusal, line_reason, quote, safe_lines
from store.evolution import ContextVersion, EvolutionStore

MAX_LINES = 12

REFLECT = (
    "You maintain a short block of standing instructions that is shown to an AI agent before every "
    "task (at most 12 lines, plain sentences, no URLs, nothing about sending data anywhere). Below are "
    "the current block and recent failures. Rewrite the block so that these failures do not happen "
    "again, keeping what still helps. Answer with the new block only."
)


def rule_line(g: FailureGroup) -> str | None:
    """One plain sentence distilled from a recurring failure, in molt's words where understood."""
    if g.kind == "tool_error":
        constraint = main_constraint(g)
        stated = state_constraint(constraint, g.cases) if constraint else None
        if stated is not None:
            return line_for(g.tools, stated.words)
        said = (constraint.said if constraint is not None and constraint.said
                else unread_constraint(g.cases[0].message))
        return line_for(g.tools, f"the tool said: {quote(said)}") if said else None
    if g.kind == "complaint":
        wish = next((c.wish for c in g.cases if c.wish is not None), None)
        if wish is not None:
            return line_for([wish.tool] if wish.before is None else [], state_wish(wish))
    return None


def dominated(a: Sequence[float], b: Sequence[float]) -> bool:
    """True if b is at least as good as a on every task and better on one."""
    return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))


def pareto_front(scores: dict[str, list[float]]) -> list[str]:
    return [k for k, v in scores.items() if not any(dominated(v, w) for o, w in scores.items() if o != k)]


@dataclass
class ContextReport:
    tasks: int = 0
    candidates: list[dict[str, Any]] = field(default_factory=list)
    front: list[str] = field(default_factory=list)
    activated: str | None = None
    reason: str = ""
    # lines the safety check refused: {"line", "reason"}
    refused: list[dict[str, str]] = field(default_factory=list)


class ContextOptimizer:
    def __init__(self, store: EvolutionStore, replayer: Replayer, *, model: ChatModel | None = None,
                 children: int = 2, minibatch: int = 3, max_tasks: int = 8) -> None:
        self.store = store
        self.replayer = replayer
        self.model = model
        self.children = children
        self.minibatch = minibatch
        self.max_tasks = max_tasks

    async def _mutate(self, parent: str, groups: Sequence[FailureGroup], covered: frozenset[str] = frozenset(),
                      refused: list[Refusal] | None = None) -> list[str]:
        """Candidate blocks, each line through the safety check (refused lines go to ``refused``)."""
        out: list[str] = []
        bad_lines: list[Refusal] = []
        same = "\n".join(ln.strip() for ln in parent.splitlines() if ln.strip())
        for text in await self._propose(parent, groups, covered, bad_lines):
            kept, bad = safe_lines(text)
            bad_lines += bad
            child = "\n".join(kept)
            if child and child != same and child not in out:
                out.append(child)
        if refused is not None:
            refused += [r for r in bad_lines if r not in refused]
        return out

    async def _propose(self, parent: str, groups: Sequence[FailureGroup], covered: frozenset[str],
                       refused: list[Refusal]) -> list[str]:
        if self.model is not None:
            rendered = "\n\n".join(render_group(g, max_cases=3) for g in groups[:4])
            prompt = [{"role": "system", "content": REFLECT},
                      {"role": "user", "content": f"Current block:\n{parent or '(empty)'}\n\nFailures:\n{rendered}"}]
            out = []
            for i in range(self.children):
                try:
                    text = await self.model.complete(prompt, temperature=0.7 if i else 0.2, max_tokens=600)
                except EvolverError:
                    continue
                lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][:MAX_LINES]
                if lines:
                    out.append("\n".join(lines))
            return out
        lines = [ln for ln in parent.splitlines() if ln.strip()]
        out = []
        for g in groups:
            line = rule_line(g)
            why = line_reason(line) if line else None
            if line and why:
                refused.append(Refusal(line[:MAX_LINE], why))  # tried no further: the next group may do
                continue
            about = subject(line) if line else None
            if about is not None and slugify(about) in covered:
                continue  # a serving skill states it; a second statement could contradict it later
            if line and line not in lines:
                # a newer rule about the same thing replaces the older one (the tools changed)
                kept = [ln for ln in lines if subject(ln) is None or subject(ln) != subject(line)]
                out.append("\n".join([*kept, line][-MAX_LINES:]))
            if len(out) >= self.children:
                break
        return out

    async def without(self, tenant_id: str, subjects: Sequence[str]) -> ContextVersion | None:
        """A candidate of the active block without its lines about ``subjects``, or None if it has none.

        A skill about the date form and a context line about it must not both
        be served (they contradict each other once the tools change again):
        the gate replays a skill with this candidate, and it becomes active if
        the skill is accepted.
        """
        active = await self.store.active_context(tenant_id)
        if active is None or not subjects:
            return None
        lines = [ln for ln in active.text.splitlines() if ln.strip()]
        kept = [ln for ln in lines if subject(ln) not in set(subjects)]
        if len(kept) == len(lines):
            return None
        kept, _ = safe_lines("\n".join(kept))
        return await self.store.add_context(tenant_id, "\n".join(kept), parent=active.id, status="candidate",
                                            scores={"reason": f"covered by skills about {', '.join(subjects)}"})

    async def _score(self, tenant: str, cid: str, tasks: Sequence[Check]) -> list[float]:
        out = []
        for check in tasks:
            try:
                calls = await self.replayer.replay(check.request, tenant=tenant, candidate=None, context=cid)
            except EvolverError:
                calls = []
            out.append(1.0 if check.passes(calls) else 0.0)
        return out

    async def step(self, tenant: str, tenant_id: str, groups: Sequence[FailureGroup],
                   good: Sequence[Any], *, covered: frozenset[str] = frozenset()) -> ContextReport:
        """One reflective mutation round; ``covered``: subjects serving skills state (left to them)."""
        fix = [c for c in (evidence_check(x) for g in groups for x in g.cases) if c]
        fix = fix[: self.max_tasks]
        keep = [c for c in (keep_check(x) for x in good) if c][: self.max_tasks]
        report = ContextReport(tasks=len(fix) + len(keep))
        if not fix:
            report.reason = "no failing turn with a known fix"
            return report
        active = await self.store.active_context(tenant_id)
        parent_text = active.text if active else ""
        parent_id = active.id if active else "none"
        refused: list[Refusal] = []
        texts = await self._mutate(parent_text, groups, covered, refused)
        report.refused = [{"line": r.text, "reason": r.reason} for r in refused]
        if not texts:
            report.reason = "no mutation to try" + (" (the safety check refused the lines)" if refused else "")
            return report
        children: list[ContextVersion] = []
        for text in texts:
            children.append(await self.store.add_context(tenant_id, text, parent=active.id if active else None,
                                                         status="candidate", scores=None))
        tasks = [*fix, *keep]
        scores = {parent_id: await self._score(tenant, parent_id, tasks)}
        mb = slice(0, min(self.minibatch, len(fix)))
        for child in children:
            # minibatch first: a child that does not beat its parent there is not scored further
            head = await self._score(tenant, child.id, fix[mb])
            if sum(head) <= sum(scores[parent_id][mb]):
                report.candidates.append({"id": child.id, "version": child.version, "minibatch": head,
                                          "status": "rejected"})
                continue
            scores[child.id] = head + await self._score(tenant, child.id, tasks[mb.stop:])
        report.front = pareto_front(scores)
        nf = len(fix)
        best, best_key = None, (sum(scores[parent_id][:nf]), sum(scores[parent_id][nf:]))
        for child in children:
            s = scores.get(child.id)
            if s is None:
                continue
            report.candidates.append({"id": child.id, "version": child.version, "fix": sum(s[:nf]) / nf,
                                      "keep": (sum(s[nf:]) / len(keep)) if keep else None})
            key = (sum(s[:nf]), sum(s[nf:]))
            if (child.id in report.front and key[0] > best_key[0]
                    and key[1] >= sum(scores[parent_id][nf:])):
                best, best_key = child, key
        if best is None:
            report.reason = "no child beat the active context"
            return report
        await self.store.add_context(tenant_id, best.text, parent=best.id, status="active",
                                     scores={"fix": best_key[0] / nf, "keep": best_key[1],
                                             "parent": parent_id, "front": report.front})
        report.activated = best.text
        report.reason = f"fixes {sum(scores[parent_id][:nf])}/{nf} -> {best_key[0]}/{nf}"
        return report
