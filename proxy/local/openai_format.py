"""OpenAI chat.completion and chat.completion.chunk objects, as the local backend sends them."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from modeling.toolcalls import ToolCall

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(
    cid: str, model: str, content: str | None, calls: list[ToolCall], finish: str,
    use: dict[str, int],
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [c.openai() for c in calls]
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": use,
    }


class ChunkWriter:
    """SSE bytes for one streamed completion."""

    def __init__(self, model: str, *, include_usage: bool) -> None:
        self.id = completion_id()
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def _sse(self, choices: list[dict[str, Any]], use: dict[str, int] | None = None) -> bytes:
        obj: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk",
                               "created": self.created, "model": self.model, "choices": choices}
        if self.include_usage:
            obj["usage"] = use
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])

    def role(self) -> bytes:
        return self.delta({"role": "assistant", "content": ""})

    def text(self, text: str) -> bytes:
        return self.delta({"content": text})

    def tool_call(self, index: int, call: ToolCall) -> bytes:
        return self.delta({"tool_calls": [{
            "index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }]})

    def finish(self, reason: str) -> bytes:
        return self.delta({}, reason)

    def usage(self, use: dict[str, int]) -> bytes:
        return self._sse([], use)
