"""A chat completion -> an OpenAI Response object, and the pieces both paths build it from.

The non-streamed route calls `from_completion`; the stream translator
(`proxy.responses.stream`) builds the same items and the same final object
with the functions below, so a streamed and a non-streamed answer to one
completion are one Response.

Ids: the Response is `resp_<hex>` for the turn `turn_<hex>` (see `response_id`);
its items are `msg_<hex>_<n>` and `fc_<hex>_<n>` for output index n, so the
ids a stream announces are the ids of the final object. A tool call the
upstream sent without an id gets `call_<hex>_<n>`.

The status follows the chat finish reason: `length` and `content_filter` make
an `incomplete` response (with `incomplete_details`), anything else
`completed`. Only the first choice is read: a Response has one output.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from proxy.responses.request import ResponsesRequest
from store.chat_shapes import ToolCall, tool_calls

JSON = dict[str, Any]
TURN_PREFIX, RESPONSE_PREFIX = "turn_", "resp_"
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(turn_id: str) -> str:
    """The Response id of a turn: the same time-sortable hex, OpenAI's prefix."""
    return RESPONSE_PREFIX + turn_id.removeprefix(TURN_PREFIX)


def turn_id(response_id: str) -> str | None:
    """The turn a Response id names; None for an id molt never made."""
    if not response_id.startswith(RESPONSE_PREFIX):
        return None
    hex_part = response_id[len(RESPONSE_PREFIX):]
    if len(hex_part) != 32 or any(c not in "0123456789abcdef" for c in hex_part):
        return None
    return TURN_PREFIX + hex_part


def item_id(resp_id: str, kind: str, index: int) -> str:
    return f"{kind}_{resp_id.removeprefix(RESPONSE_PREFIX)}_{index}"


def text_part(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> JSON:
    return {"type": "refusal", "refusal": refusal}


def message_item(id_: str, parts: list[JSON], status: str = "completed") -> JSON:
    return {"id": id_, "type": "message", "role": "assistant", "status": status, "content": parts}


def call_item(id_: str, call_id: str, name: str, arguments: str, status: str = "completed") -> JSON:
    return {"id": id_, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def _count(v: Any) -> int:
    return v if type(v) is int and v >= 0 else 0


def usage(chat_usage: Any) -> JSON | None:
    """Chat usage (prompt/completion tokens) in the Responses form (input/output tokens)."""
    if not isinstance(chat_usage, dict):
        return None
    prompt, completion = _count(chat_usage.get("prompt_tokens")), _count(chat_usage.get("completion_tokens"))
    pdet = chat_usage.get("prompt_tokens_details")
    cdet = chat_usage.get("completion_tokens_details")
    cached = _count(pdet.get("cached_tokens")) if isinstance(pdet, dict) else 0
    reasoning = _count(cdet.get("reasoning_tokens")) if isinstance(cdet, dict) else 0
    total = chat_usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total if type(total) is int and total >= 0 else prompt + completion,
    }


def status_of(finish_reason: Any) -> tuple[str, JSON | None]:
    """(status, incomplete_details) for a chat finish reason."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    if reason is not None:
        return "incomplete", {"reason": reason}
    return "completed", None


def response_object(resp_id: str, req: ResponsesRequest, created_at: float, *,
                    status: str, output: list[JSON], model: str | None = None,
                    usage: JSON | None = None, incomplete_details: JSON | None = None,
                    error: JSON | None = None) -> JSON:
    """A Response object; the request's settings are echoed as OpenAI does."""
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": time.time() if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": model or req.model,
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": req.reasoning,
        "store": req.store,
        "temperature": req.temperature,
        "text": req.text,
        "tool_choice": req.tool_choice,
        "tools": req.tools,
        "top_p": req.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": req.user,
        "metadata": req.metadata or {},
    }


def _has_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # some upstreams answer in parts
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def answer_calls(resp_id: str, message: Mapping[str, Any]) -> list[ToolCall]:
    """The tool calls of an answer, each with the call id its Response shows.

    A call the upstream sent without an id gets `call_<hex>_<n>`; a follow-up's
    history (`proxy.responses.followup`) uses the same ids, so the client's
    `function_call_output` answers a call the upstream sees.
    """
    calls = tool_calls(message)
    first = 1 if _has_text(message) or _refusal(message) else 0
    return [c if c.id else ToolCall(item_id(resp_id, "call", first + n), c.name, c.arguments)
            for n, c in enumerate(calls)]


def _refusal(message: Mapping[str, Any]) -> str:
    refusal = message.get("refusal")
    return refusal if isinstance(refusal, str) else ""


def output_items(resp_id: str, message: Mapping[str, Any]) -> list[JSON]:
    """The output items of a chat assistant message: its text (or refusal), then its calls."""
    items: list[JSON] = []
    parts: list[JSON] = []
    if text := _has_text(message):
        parts.append(text_part(text))
    if refusal := _refusal(message):
        parts.append(refusal_part(refusal))
    if parts:
        items.append(message_item(item_id(resp_id, "msg", 0), parts))
    for call in answer_calls(resp_id, message):
        items.append(call_item(item_id(resp_id, "fc", len(items)), call.id, call.name,
                               call.arguments))
    return items


def from_completion(resp_id: str, req: ResponsesRequest, completion: JSON,
                    created_at: float | None = None) -> JSON:
    """The Response object for a non-streamed chat completion."""
    choices = completion.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message")
    status, incomplete = status_of(first.get("finish_reason"))
    created = completion.get("created")
    if created_at is None:
        created_at = float(created) if isinstance(created, int | float) and not isinstance(
            created, bool) else time.time()
    model = completion.get("model")
    return response_object(
        resp_id, req, created_at, status=status,
        output=output_items(resp_id, message if isinstance(message, dict) else {}),
        model=model if isinstance(model, str) else None,
        usage=usage(completion.get("usage")), incomplete_details=incomplete)
