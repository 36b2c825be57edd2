"""Failure mining: failed or low-scored turns since the last evolution, grouped by what went wrong.

Our instantiation of MetaClaw's failure reader: instead of handing the
evolver model up to six raw failures, failures are grouped (tool error
pattern, complaint, low-scored tool) so that one proposal addresses one
recurring problem, and each group is rendered compactly (tail of the context,
head of the response, the error or complaint, the hindsight target if any).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evolver.cases import Case, cases_from_session, is_error, turn_calls
from store.chat_shapes import tool_calls
from store.feedback import FeedbackStore
from store.trajectories import TrajectoryStore


@dataclass
class FailureGroup:
    key: str
    kind: str
    message: str
    cases: list[Case] = field(default_factory=list)

    @property
    def tools(self) -> list[str]:
        return sorted({tool for c in self.cases for tool in c.tools})

    @property
    def turn_ids(self) -> list[str]:
        return [c.turn_id for c in self.cases]


@dataclass
class Mined:
    groups: list[FailureGroup]
    good: list[Case]  # turns that went well, for non-regression checks
    turns_seen: int


def good_turns(session_id: str, turns: Sequence[Mapping[str, Any]], cases: Sequence[Case],
               feedback: Sequence[Mapping[str, Any]]) -> list[Case]:
    """One session's turns that went well (`turns` ordered by index): main answered turns
    with tool calls, no failure case and no negative score; for non-regression checks."""
    failed = {c.turn_id for c in cases}
    bad_fb = {f["turn_id"] for f in feedback if f.get("score") is not None and f["score"] < 0}
    good = []
    for t in turns:
        calls = [(n, a) for _, n, a in turn_calls(t)]
        if (calls and t["turn_type"] == "main" and t["status"] == "ok"
                and t["id"] not in failed and t["id"] not in bad_fb):
            good.append(Case(str(t["id"]), session_id, "good", "", [n for n, _ in calls],
                             t["request"], calls, calls[0], at=float(t.get("created_at") or 0.0)))
    return good


def assemble(sessions: Iterable[tuple[list[Case], list[Case]]], turns_seen: int, *,
             good_sample: int = 12, seed: int = 0) -> Mined:
    """Failure groups and the good sample from each session's (cases, good turns), the
    sessions in the order their first turn was served."""
    groups: dict[str, FailureGroup] = {}
    good: list[Case] = []
    for cases, ok in sessions:
        for c in cases:
            groups.setdefault(c.key, FailureGroup(c.key, c.kind, c.message)).cases.append(c)
        good += ok
    rng = random.Random(seed)
    rng.shuffle(good)
    ordered = sorted(groups.values(), key=lambda g: -len(g.cases))
    return Mined(ordered, good[:good_sample], turns_seen)


async def mine(trajectories: TrajectoryStore, feedback: FeedbackStore, tenant_id: str,
               since: float, *, good_sample: int = 12, seed: int = 0) -> Mined:
    """Mine every turn served since `since` (a full read; evolver/watch.py keeps the same
    incrementally)."""
    turns = await trajectories.turns_since(since, tenant_id=tenant_id)
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in turns:
        by_session[str(t["session_id"])].append(t)
    fb = await feedback.for_sessions(list(by_session))
    fb_by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in fb:
        fb_by_session[str(f["session_id"])].append(f)
    per_session = []
    for sid, sturns in by_session.items():
        sturns.sort(key=lambda t: t["idx"])
        sfb = fb_by_session.get(sid, [])
        cases = cases_from_session(sturns, sfb)
        per_session.append((cases, good_turns(sid, sturns, cases, sfb)))
    return assemble(per_session, len(turns), good_sample=good_sample, seed=seed)


def answers_an_error(request: Mapping[str, Any]) -> bool:
    """Whether a turn's request ends on a tool error: the turn is a retry, the evidence of a fix
    (hindsight), not a first try; the gate's non-regression sample is first tries."""
    messages = request.get("messages") or []
    tail = []
    for m in reversed(messages):
        if not isinstance(m, dict) or m.get("role") != "tool":
            break
        tail.append(m)
    return any(is_error(m["content"] if isinstance(m.get("content"), str) else json.dumps(m.get("content")))
               for m in tail)


def render_case(c: Case, *, tail: int = 3, head_chars: int = 400) -> str:
    """A compact view of one failure for the evolver model."""
    msgs = (c.request.get("messages") or [])[-tail:]
    lines = []
    for m in msgs:
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        calls = ", ".join(c.call_text() for c in tool_calls(m))
        lines.append(f"  {m.get('role')}: {(text or '')[:head_chars]}{' -> ' + calls if calls else ''}")
    answer = "; ".join(f"{n}({json.dumps(a)})" for n, a in c.calls)[:head_chars]
    lines.append(f"  assistant answered: {answer or '(text)'}")
    lines.append(f"  what went wrong ({c.kind}): {c.message}")
    if c.target:
        lines.append(f"  later accepted: {c.target[0]}({json.dumps(c.target[1])})")
    return "\n".join(lines)


def render_group(g: FailureGroup, max_cases: int = 6) -> str:
    head = f"[{g.kind}] seen {len(g.cases)}x, tools {', '.join(g.tools) or '-'}: {g.message}"
    body = "\n".join(render_case(c) for c in g.cases[:max_cases])
    return f"{head}\n{body}"


def failure_count(groups: Sequence[FailureGroup]) -> int:
    return sum(len(g.cases) for g in groups)
