"""Recorded evidence about a step: what its tool calls returned, read from the next request.

When an agent runs a tool call, its next request carries the result: an OpenAI `tool`
message with the call's `tool_call_id`, or an Anthropic `tool_result` block with its
`tool_use_id` (and `is_error`). A result is an error when it says so in one of the
formats tools really use:
- a JSON object with a non-empty `error` (JSON-RPC, most REST APIs), `isError: true` (MCP)
  or `is_error: true`, or an HTTP status >= 400 in `status`, `status_code`, `statusCode`
  or `code`;
- text that starts with `error`, `exception`, `traceback` or `fatal` (any case), or with
  an HTTP status line `HTTP/1.1 404 ...`.
Tool text is untrusted data: it is only classified here, never executed or shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

JSON = dict[str, Any]

_ERROR_TEXT = re.compile(r"^\s*[\[(]?\s*(error|exception|traceback|fatal)\b", re.IGNORECASE)
_HTTP_LINE = re.compile(r"^\s*HTTP(?:/\d(?:\.\d)?)?\s+([1-5]\d\d)\b", re.IGNORECASE)
_STATUS_KEYS = ("status", "status_code", "statusCode", "code")


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(p.get("text") if isinstance(p, dict) else p) for p in content)
    if isinstance(content, dict):
        return json.dumps(content)
    return str(content)


def _json_error(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    err = obj.get("error")
    if err not in (None, False, "", {}, []):
        return True
    if obj.get("isError") is True or obj.get("is_error") is True:
        return True
    for key in _STATUS_KEYS:
        v = obj.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599:
            return True
    return False


def is_error_result(content: Any) -> bool:
    """True when a tool result's content reports an error (see the module docstring)."""
    if isinstance(content, dict) and _json_error(content):
        return True
    text = _text(content).strip()
    if not text:
        return False
    if text[0] == "{":
        try:
            if _json_error(json.loads(text)):
                return True
        except json.JSONDecodeError:
            pass
    if _ERROR_TEXT.match(text):
        return True
    m = _HTTP_LINE.match(text)
    return bool(m and int(m.group(1)) >= 400)


def tool_results(messages: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    """Call id -> whether its result is an error, for every tool result in `messages`."""
    out: dict[str, bool] = {}
    for m in messages:
        if m.get("role") == "tool" and m.get("tool_call_id"):
            out[str(m["tool_call_id"])] = is_error_result(m.get("content"))
            continue
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("tool_use_id"):
                err = block.get("is_error") is True or is_error_result(block.get("content"))
                out[str(block["tool_use_id"])] = err
    return out


def call_outcomes(calls: Sequence[Mapping[str, Any]], next_messages: Sequence[Mapping[str, Any]] | None
                  ) -> list[bool | None]:
    """Per call: True (error), False (ran fine) or None (no result seen) in the next request."""
    if not next_messages:
        return [None] * len(calls)
    results = tool_results(next_messages)
    return [results.get(str(c.get("id"))) if c.get("id") else None for c in calls]
