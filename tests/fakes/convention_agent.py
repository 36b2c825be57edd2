"""A scripted stand-in for a remote model that follows conventions only when told.

It plays toolworld tasks the way a capable LLM with a habit would: it makes
the planned calls, but writes arguments the way the base days want (its
habit) unless a system message states the convention (a marker such as
`DD.MM.YYYY` in a skills or context block) or the last tool result was an
error that names it (or, with `reads_tools`, a tool parameter's description
in the request names it); then it writes them the way the day wants. This lets
tests drive the evolver end to end through real molt, real toolworld and the
real driver without depending on the tiny policy's quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.toolworld import BASE, Task, generate_tasks
from tests.fakes.fake_llm import Reply


def _text(m: dict[str, Any]) -> str:
    c = m.get("content")
    return c if isinstance(c, str) else ""


class ConventionFollower:
    def __init__(self, day: int, n: int, seed: int, marker: str, *, reads_tools: bool = False) -> None:
        self.tasks: list[Task] = generate_tasks(day, n, seed)
        habit = generate_tasks(day, n, seed, conventions=dict(BASE))
        self.by_user = {t.user_message: (t, h) for t, h in zip(self.tasks, habit)}
        self.marker = marker
        self.reads_tools = reads_tools
        self.calls = 0

    def affected(self) -> list[Task]:
        return [t for t in self.tasks if any(c.affected for c in t.plan)]

    def described(self, tools: Any) -> bool:
        """Whether a parameter description of the offered tools names the convention."""
        for tool in tools if isinstance(tools, list) else ():
            props = ((tool.get("function") or {}).get("parameters") or {}).get("properties") or {}
            if any(self.marker in str(p.get("description") or "") for p in props.values()):
                return True
        return False

    def knows(self, messages: Sequence[dict[str, Any]], tools: Any = None) -> bool:
        told = any(m.get("role") == "system" and self.marker in _text(m) for m in messages)
        told = told or (self.reads_tools and self.described(tools))
        last = messages[-1] if messages else {}
        corrected = last.get("role") == "tool" and _text(last).startswith("error") and self.marker in _text(last)
        return told or corrected

    def __call__(self, body: dict[str, Any]) -> Reply:
        self.calls += 1
        messages = body.get("messages") or []
        user = next((_text(m) for m in messages if m.get("role") == "user"), "")
        true, habit = self.by_user[user]
        done = sum(1 for m in messages if m.get("role") == "tool" and not _text(m).startswith("error"))
        if done >= len(true.plan):
            return Reply(content=true.final_answer)
        call = (true if self.knows(messages, body.get("tools")) else habit).plan[done]
        return Reply(tool_calls=[(call.name, dict(call.arguments))])
