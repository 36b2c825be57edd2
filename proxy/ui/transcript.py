"""A recorded session as a person reads it: per turn, what was new, what the model did.

Pure functions over the stored rows (`TrajectoryStore.get_session`): no
database, no request. Text stays as it was recorded; the templates escape it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.chat_shapes import tool_calls
from store.records import SessionDetail


@dataclass(slots=True)
class Message:
    role: str
    text: str  # the content as text (parts joined; non-text parts as JSON)
    name: str | None = None  # a tool result's tool call id, or a message's name
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class TurnView:
    row: dict[str, Any]
    earlier: int  # messages of the request already shown in earlier turns
    tail: list[Message]  # what the agent added since the model last answered
    injected: list[Message]  # what molt added on the way up (skills block, context)
    calls: list[dict[str, str]]  # the response's tool calls: id, name, arguments
    think: list[dict[str, Any]]
    feedback: list[dict[str, Any]]


def _text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                parts.append(repr(p) if not isinstance(p, dict) else str(p))
        return "\n".join(parts)
    return str(content)


def _message(m: object) -> Message:
    if not isinstance(m, dict):
        return Message("?", _text(m))
    calls = [c for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    name = m.get("tool_call_id") or m.get("name")
    return Message(str(m.get("role", "?")), _text(m.get("content")),
                   str(name) if name is not None else None, calls)


def _messages(body: object) -> list[Any]:
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        return list(body["messages"])
    return []


def tool_call_views(calls: object) -> list[dict[str, str]]:
    return [{"id": c.id, "name": c.name, "arguments": c.arguments}
            for c in tool_calls({"tool_calls": calls})]


def _tail_start(messages: list[Any]) -> int:
    """Where the messages after the model's last answer begin (0: the whole request is new)."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, dict) and m.get("role") == "assistant":
            return i + 1
    return 0


def _injected(request: list[Any], upstream: list[Any]) -> list[Message]:
    """Messages molt added on the way up: in what went upstream but not in the agent's request."""
    sent = [repr(m) for m in request]
    out = []
    for m in upstream:
        r = repr(m)
        if r in sent:
            sent.remove(r)
        else:
            out.append(_message(m))
    return out


def turn_views(detail: SessionDetail) -> tuple[list[TurnView], list[dict[str, Any]]]:
    """Each turn with its new messages and feedback; and the feedback on the whole session."""
    by_turn: dict[str, list[dict[str, Any]]] = {}
    on_session: list[dict[str, Any]] = []
    for f in detail.feedback:
        if f.get("turn_id"):
            by_turn.setdefault(str(f["turn_id"]), []).append(f)
        else:
            on_session.append(f)
    views = []
    for row in detail.turns:
        msgs = _messages(row.get("request"))
        start = _tail_start(msgs)
        up = row.get("upstream_request")
        think = [x if isinstance(x, dict) else {"text": str(x)} for x in row.get("think") or []]
        views.append(TurnView(
            row=row, earlier=start, tail=[_message(m) for m in msgs[start:]],
            injected=_injected(msgs, _messages(up)) if up is not None else [],
            calls=tool_call_views(row.get("tool_calls")), think=think,
            feedback=by_turn.get(str(row["id"]), []),
        ))
    return views, on_session
