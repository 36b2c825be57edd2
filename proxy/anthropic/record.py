"""A native Messages answer in molt's internal form, for the record and the session tracker.

When a route's upstream speaks Messages itself, its bytes go to the client
unchanged, and the turn is still stored as every other turn is: as a chat
completion (`completion_of`) or as chat.completion.chunk SSE bytes
(`ChunkTap`), so the recorder, the session tracker and the evolver read one
format. The mapping is the inverse of `proxy.anthropic.response`: text blocks
-> `content`, `tool_use` -> `tool_calls` (`input` as JSON text), `thinking`
-> `reasoning_content`, stop reasons -> finish reasons, usage -> prompt and
completion tokens (cache reads and writes counted in the prompt).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from proxy.anthropic.request import tool_arguments
from proxy.anthropic.response import STOP_REASONS

JSON = dict[str, Any]
FINISH_REASONS: dict[str, str] = {v: k for k, v in STOP_REASONS.items() if k != "function_call"}
FINISH_REASONS.update({"stop_sequence": "stop", "pause_turn": "stop",
                       "model_context_window_exceeded": "length"})
DONE = b"data: [DONE]\n\n"


def _dict(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def finish_reason(stop: Any) -> str | None:
    return FINISH_REASONS.get(stop, "stop") if isinstance(stop, str) else None


def chat_usage(u: Any) -> JSON:
    """Messages usage as chat completion usage (cache reads and writes are prompt tokens)."""
    u = _dict(u)
    cached = _int(u.get("cache_read_input_tokens"))
    prompt = _int(u.get("input_tokens")) + cached + _int(u.get("cache_creation_input_tokens"))
    out = _int(u.get("output_tokens"))
    usage: JSON = {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def completion_of(message: Mapping[str, Any]) -> JSON:
    """The chat completion that says what a Messages `message` says (total over any JSON)."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[JSON] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        b = _dict(block)
        if b.get("type") == "text" and isinstance(b.get("text"), str):
            texts.append(b["text"])
        elif b.get("type") == "thinking" and isinstance(b.get("thinking"), str):
            thinking.append(b["thinking"])
        elif b.get("type") == "tool_use":
            calls.append({"id": b.get("id"), "type": "function", "function": {
                "name": str(b.get("name") or ""), "arguments": tool_arguments(b.get("input", {}))}})
    msg: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    if thinking:
        msg["reasoning_content"] = "".join(thinking)
    return {"id": message.get("id"), "object": "chat.completion", "model": message.get("model"),
            "choices": [{"index": 0, "message": msg,
                         "finish_reason": finish_reason(message.get("stop_reason"))}],
            "usage": chat_usage(message.get("usage"))}


class ChunkTap:
    """Messages SSE events in, the chat.completion.chunk SSE bytes that say the same out."""

    def __init__(self) -> None:
        self._base: JSON = {"object": "chat.completion.chunk", "choices": []}
        self._tools: dict[int, int] = {}  # Messages block index -> tool-call index
        self._usage: JSON = {}

    def _chunk(self, delta: JSON | None, finish: str | None = None, **extra: Any) -> bytes:
        chunk: JSON = dict(self._base, **extra)
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def feed(self, payload: str) -> bytes:
        """The chat chunks for one Messages event's `data:` payload (b"" for none)."""
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            return b""
        if not isinstance(event, dict):
            return b""
        kind = event.get("type")
        if kind == "message_start":
            msg = _dict(event.get("message"))
            self._base.update(id=msg.get("id"), model=msg.get("model"))
            self._usage.update(_dict(msg.get("usage")))
            return self._chunk({"role": "assistant"})
        if kind == "content_block_start":
            block = _dict(event.get("content_block"))
            if block.get("type") != "tool_use":
                return b""
            index = self._tools[_int(event.get("index"))] = len(self._tools)
            return self._chunk({"tool_calls": [{"index": index, "id": block.get("id"),
                                                "type": "function", "function": {
                                                    "name": block.get("name"), "arguments": ""}}]})
        if kind == "content_block_delta":
            return self._delta(_int(event.get("index")), _dict(event.get("delta")))
        if kind == "message_delta":
            self._usage.update({k: v for k, v in _dict(event.get("usage")).items() if v is not None})
            stop = finish_reason(_dict(event.get("delta")).get("stop_reason"))
            return (self._chunk({}, stop or "stop")
                    + self._chunk(None, usage=chat_usage(self._usage)))
        if kind == "message_stop":
            return DONE
        if kind == "error":
            return self._chunk(None, error=dict(_dict(event.get("error"))))
        return b""

    def _delta(self, index: int, delta: Mapping[str, Any]) -> bytes:
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            return self._chunk({"content": delta["text"]})
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            return self._chunk({"reasoning_content": delta["thinking"]})
        if kind == "input_json_delta" and index in self._tools:
            return self._chunk({"tool_calls": [{"index": self._tools[index], "function": {
                "arguments": str(delta.get("partial_json") or "")}}]})
        return b""
