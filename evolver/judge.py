"""The judge: a process reward model that scores each assistant turn +1 / 0 / -1.

MetaClaw's scheme: turn t is judged when turn t+1 exists, because the next
state (tool results, the user's reply) is the evidence; `votes` samples at
`temperature`, majority wins (ties: 0). Results are written as `feedback`
rows with source `judge` and cached: a turn already judged by the same judge
model is not judged again. The cost (calls, tokens) is kept in each row's meta.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from evolver.errors import ModelCallFailed
from evolver.llm import ChatModel
from store.chat_shapes import tool_calls
from store.feedback import FeedbackStore

SYSTEM = (
    "You grade one step of an AI agent. You see the conversation up to the step, the step "
    "(the assistant's answer or tool calls), and what happened next (tool results, the user's "
    "reply). Answer with one line: 'Score: +1' if the step was right and useful, 'Score: 0' if "
    "it is unclear, 'Score: -1' if it was wrong (a failed tool call, a wrong argument, a user "
    "correction). Then one short sentence why."
)
_SCORE = re.compile(r"score\s*[:=]\s*([+-]?\d)", re.IGNORECASE)


def _compact(messages: Sequence[Mapping[str, Any]], limit: int = 6000) -> str:
    lines = []
    for m in messages:
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        for c in tool_calls(m):
            text = f"{text or ''} -> {c.call_text()}"
        lines.append(f"{m.get('role')}: {text}")
    out = "\n".join(lines)
    return out[-limit:]


def judge_prompt(turn: Mapping[str, Any], next_turn: Mapping[str, Any] | None) -> list[dict[str, str]]:
    before = (turn.get("request") or {}).get("messages") or []
    step = {"role": "assistant", "content": turn.get("content"), "tool_calls": turn.get("tool_calls")}
    after: list[Mapping[str, Any]] = []
    if next_turn is not None:
        later = (next_turn.get("request") or {}).get("messages") or []
        after = later[len(before) + 1:]
    user = (f"Conversation so far:\n{_compact(before)}\n\nThe step:\n{_compact([step])}\n\n"
            f"What happened next:\n{_compact(after) or '(nothing yet)'}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_score(text: str) -> int | None:
    m = _SCORE.search(text)
    if not m:
        return None
    v = int(m.group(1))
    return v if v in (-1, 0, 1) else None


def majority(votes: Sequence[int | None]) -> int:
    counted = Counter(v for v in votes if v is not None)
    if not counted:
        return 0
    (top, n), *rest = counted.most_common()
    if rest and rest[0][1] == n:
        return 0
    return top


class Judge:
    def __init__(self, model: ChatModel, feedback: FeedbackStore, *, votes: int = 3,
                 temperature: float = 0.6) -> None:
        self.model = model
        self.feedback = feedback
        self.votes = votes
        self.temperature = temperature

    async def score_turn(self, turn: Mapping[str, Any], next_turn: Mapping[str, Any] | None) -> tuple[int, list[int | None]]:
        prompt = judge_prompt(turn, next_turn)
        votes: list[int | None] = []
        for _ in range(self.votes):
            try:
                votes.append(parse_score(await self.model.complete(prompt, temperature=self.temperature,
                                                                   max_tokens=64)))
            except ModelCallFailed:
                votes.append(None)
        return majority(votes), votes

    async def judge_session(self, turns: Sequence[Mapping[str, Any]]) -> int:
        """Judge every main turn that has a next turn and no judge score yet; return how many."""
        main = [t for t in turns if t.get("turn_type") == "main" and t.get("status") == "ok"]
        done = {f["turn_id"] for f in await self.feedback.for_turns([str(t["id"]) for t in main])
                if f["source"] == "judge" and (f.get("meta") or {}).get("model") == self.model.name}
        n = 0
        for t, nxt in itertools.pairwise(main):
            if t["id"] in done:
                continue
            before = self.model.cost.as_dict()
            score, votes = await self.score_turn(t, nxt)
            after = self.model.cost.as_dict()
            await self.feedback.add(
                tenant_id=str(t["tenant_id"]), session_id=str(t["session_id"]), turn_id=str(t["id"]),
                score=float(score), text=None, source="judge",
                meta={"model": self.model.name, "votes": votes,
                      "cost": {k: after[k] - before[k] for k in after}})
            n += 1
        return n
