"""A chat completion (molt's internal form) as a Messages API `message` object.

The first choice's text becomes one `text` block (none when it is empty),
each tool call a `tool_use` block with the upstream's call id (so the
client's `tool_result` comes back with the id the trajectory holds). The
finish reason maps to a stop reason (`STOP_REASONS`); usage keeps the
upstream's counts, with cached prompt tokens reported as
`cache_read_input_tokens` and left out of `input_tokens`, as Anthropic counts.

Tool-call arguments that are not a JSON object (a model's malformed call)
cannot be a `tool_use.input`; they are passed as `{"_raw_arguments": text}`
so that the agent's tool sees, and reports, what the model wrote.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

JSON = dict[str, Any]

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
RAW_ARGUMENTS = "_raw_arguments"


def _dict(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def stop_reason(finish: Any, has_tool_calls: bool) -> str:
    """The Messages stop reason for an OpenAI finish reason (tool calls win: some servers say "stop")."""
    if has_tool_calls and finish in (None, "stop", "tool_calls", "function_call"):
        return "tool_use"
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def usage(u: Any) -> JSON:
    """Chat completion usage as Messages usage."""
    u = _dict(u)
    prompt = _count(u.get("prompt_tokens"))
    cached = _count(_dict(u.get("prompt_tokens_details")).get("cached_tokens"))
    out: JSON = {"input_tokens": max(prompt - cached, 0),
                 "output_tokens": _count(u.get("completion_tokens"))}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def tool_input(arguments: Any) -> JSON:
    """A tool call's `arguments` (JSON text) as a tool_use `input` object."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {RAW_ARGUMENTS: arguments}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS: arguments}


def tool_use_id(call_id: Any) -> str:
    """The upstream's call id, or a fresh one for an upstream that gave none."""
    return call_id if isinstance(call_id, str) and call_id else "toolu_" + secrets.token_hex(12)


def to_message(completion: Mapping[str, Any], *, message_id: str, model: str) -> JSON:
    """The Message for a chat completion; total over whatever JSON object the upstream sent."""
    choices = completion.get("choices")
    first = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    msg = _dict(first.get("message"))
    content: list[JSON] = []
    text = msg.get("content")
    if isinstance(text, list):  # content parts, from an upstream that sends them
        text = "".join(str(_dict(p).get("text") or "") for p in text)
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = msg.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        fn = _dict(_dict(call).get("function"))
        content.append({"type": "tool_use", "id": tool_use_id(_dict(call).get("id")),
                        "name": str(fn.get("name") or ""), "input": tool_input(fn.get("arguments"))})
    has_calls = any(b["type"] == "tool_use" for b in content)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(first.get("finish_reason"), has_calls),
        "stop_sequence": None,
        "usage": usage(completion.get("usage")),
    }
