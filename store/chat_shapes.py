"""Reading the OpenAI chat shapes: tool calls, offered tools, a completion's answer.

molt keeps every turn in one internal form, OpenAI Chat Completions (the
routes of other protocols translate to it), so the proxy, the evolver and
the store read the same dicts. These accessors are the one place that walks
them. Each is total: whatever JSON a client or an upstream sent, a part
without the expected shape is skipped, never raised on. They read; code
that rewrites a message (TAFC) or checks a request (`proxy.protocol`) works
on the dicts itself.

It lives in the store, the layer below both proxy and evolver.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One `tool_calls` entry of an assistant message."""

    id: str
    name: str
    # as the model wrote it: JSON text (a non-string value is dumped to JSON)
    arguments: str

    def args(self) -> dict[str, Any]:
        """The arguments as an object; {} when they are not a JSON object."""
        try:
            value = json.loads(self.arguments or "{}")
        except (ValueError, RecursionError):
            return {}
        return value if isinstance(value, dict) else {}

    def call_text(self) -> str:
        """`name(arguments)`: how prompts and views show a call."""
        return f"{self.name}({self.arguments})"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def tool_calls(message: Any) -> list[ToolCall]:
    """The tool calls of an assistant message (or of a recorded turn, which has the same key)."""
    calls = message.get("tool_calls") if isinstance(message, Mapping) else None
    out: list[ToolCall] = []
    for c in calls if isinstance(calls, list) else ():
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping):
            continue
        name = fn.get("name")
        out.append(ToolCall(_text(c.get("id")), name if isinstance(name, str) else _text(name),
                            _text(fn.get("arguments"))))
    return out


def choice_messages(completion: Any) -> list[Mapping[str, Any]]:
    """The message of each choice of a chat completion, in order."""
    choices = completion.get("choices") if isinstance(completion, Mapping) else None
    out: list[Mapping[str, Any]] = []
    for ch in choices if isinstance(choices, list) else ():
        msg = ch.get("message") if isinstance(ch, Mapping) else None
        if isinstance(msg, Mapping):
            out.append(msg)
    return out


def answer_message(completion: Any) -> Mapping[str, Any] | None:
    """The assistant message of a chat completion (its first choice), if it has one."""
    choices = completion.get("choices") if isinstance(completion, Mapping) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    msg = first.get("message") if isinstance(first, Mapping) else None
    return msg if isinstance(msg, Mapping) else None


def answer_calls(completion: Any) -> list[ToolCall]:
    """Every tool call a chat completion answered with, over all its choices."""
    return [c for msg in choice_messages(completion) for c in tool_calls(msg)]


def tool_schemas(body: Any) -> dict[str, Mapping[str, Any]]:
    """name -> function schema (`name`, `description`, `parameters`) of each tool offered.

    Takes `{"type": "function", "function": {...}}` entries and flat `{"name": ...}` ones.
    """
    tools = body.get("tools") if isinstance(body, Mapping) else None
    out: dict[str, Mapping[str, Any]] = {}
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, Mapping):
            continue
        inner = tool.get("function")
        fn = inner if isinstance(inner, Mapping) else tool
        name = fn.get("name")
        if isinstance(name, str) and name and name not in out:
            out[name] = fn
    return out


def tool_names(tools: Any) -> list[str]:
    """The names in a `tools` list, in order (repeats kept)."""
    names: list[str] = []
    for tool in tools if isinstance(tools, list | tuple) else ():
        if not isinstance(tool, Mapping):
            continue
        inner = tool.get("function")
        fn = inner if isinstance(inner, Mapping) else tool
        name = fn.get("name")
        if isinstance(name, str) and name:
            names.append(name)
    return names


def offered_tools(body: Any) -> frozenset[str]:
    """The names of the tools (and legacy `functions`) a request offers the model."""
    if not isinstance(body, Mapping):
        return frozenset()
    functions = body.get("functions")
    legacy = [f.get("name") for f in functions if isinstance(f, Mapping)] \
        if isinstance(functions, list) else []
    return frozenset([*tool_names(body.get("tools")),
                      *(n for n in legacy if isinstance(n, str) and n)])
