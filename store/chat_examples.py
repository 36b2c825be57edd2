"""A recorded turn as an example in the OpenAI chat fine-tuning format.

One example is one model call: `{"messages": [...the request's messages...,
the assistant's answer], "tools": [...]}` (plus `parallel_tool_calls` when the
request set it): the prompt exactly as recorded, ending with the answer the
agent received (its text and tool calls, arguments as JSON strings). That is
the line OpenAI's fine-tuning API, trl's SFTTrainer and most chat fine-tuning
tools read.

`form="agent"` (the default) gives what the agent sent; `form="upstream"` the
request as molt sent it upstream (skill and context blocks injected,
think-augmented tools), falling back to the agent's where molt changed
nothing. The answer is the agent's in both: what the agent was given.
"""

from __future__ import annotations

from typing import Any, Literal

from store.chat_shapes import ToolCall, tool_calls
from store.export import ExportTurn
from store.records import JSON

Form = Literal["agent", "upstream"]


def _call(c: ToolCall) -> JSON:
    return {"id": c.id, "type": "function",
            "function": {"name": c.name, "arguments": c.arguments or "{}"}}


def answer(turn: ExportTurn) -> JSON | None:
    """The assistant message the agent received, or None when there was none (an error, blank)."""
    calls = [_call(c) for c in tool_calls({"tool_calls": turn.tool_calls})]
    text = turn.content if isinstance(turn.content, str) and turn.content.strip() else None
    if text is None and not calls:
        return None
    msg: JSON = {"role": "assistant"}
    if text is not None:
        msg["content"] = text
    if calls:
        msg["tool_calls"] = calls
    return msg


def request_of(turn: ExportTurn, form: Form = "agent") -> JSON:
    """The request body of `form` (the agent's where molt sent it unchanged)."""
    if form == "upstream" and isinstance(turn.upstream_request, dict):
        return turn.upstream_request
    return turn.request


def prompt(turn: ExportTurn, form: Form = "agent") -> list[JSON] | None:
    """The request's messages, or None when the request is not in the chat shape."""
    messages = request_of(turn, form).get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return None
    return messages


def tools(turn: ExportTurn, form: Form = "agent") -> list[JSON] | None:
    offered = request_of(turn, form).get("tools")
    return offered if isinstance(offered, list) and offered else None


def example(turn: ExportTurn, form: Form = "agent") -> JSON | None:
    """The fine-tuning line of `turn`, or None when it has no chat prompt or no answer."""
    messages, reply = prompt(turn, form), answer(turn)
    if messages is None or reply is None:
        return None
    out: JSON = {"messages": [*messages, reply]}
    offered = tools(turn, form)
    if offered is not None:
        out["tools"] = offered
    parallel = request_of(turn, form).get("parallel_tool_calls")
    if isinstance(parallel, bool):
        out["parallel_tool_calls"] = parallel
    return out


def overlay_versions(recorded: Any) -> list[str]:
    """The tool overlay versions a turn records, as ``<id>@v<version>`` (malformed entries left out)."""
    return [f"{o['id']}@v{o.get('version')}" for o in recorded if isinstance(o, dict) and o.get("id")] \
        if isinstance(recorded, list) else []


def metadata(turn: ExportTurn) -> JSON:
    """Where an example came from and how it went (`molt export --meta`)."""
    return {
        "turn_id": turn.id, "session_id": turn.session_id, "tenant": turn.tenant or turn.tenant_id,
        "idx": turn.idx, "created_at": turn.created_at, "model": turn.request_model,
        "weight_version": turn.weight_version, "skill_generation": turn.skill_generation,
        "tool_overlays": overlay_versions(turn.tool_overlays),
        "status": turn.status, "score": turn.score, "verdict": turn.verdict,
    }
