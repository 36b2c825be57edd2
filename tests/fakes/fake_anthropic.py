"""A scripted Anthropic Messages server: the stand-in for a provider that speaks Messages.

Same script as `FakeLLM` (`Reply` objects; an echo of the last user text when
the script is empty). `POST /v1/messages` answers a `message` object or, with
`stream: true`, Anthropic's event sequence: `message_start`, `ping`, per block
`content_block_start` / deltas (text in words, tool input in 8-character
pieces) / `content_block_stop`, `message_delta`, `message_stop`. A scripted
failure status answers Anthropic's error shape. Every request's body and
headers are kept, and `stream_bytes` holds each stream exactly as it was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.fake_llm import Reply

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic:
    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.stream_bytes: list[bytes] = []
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.content:
            content.append({"type": "text", "text": reply.content})
        for i, (name, args) in enumerate(reply.tool_calls):
            content.append({"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args})
        return {"id": "msg_fake", "type": "message", "role": "assistant",
                "model": body.get("model", "claude-fake"), "content": content,
                "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}}

    def events(self, body: dict[str, Any], reply: Reply) -> list[bytes]:
        msg = self.message(body, reply)
        start = dict(msg, content=[], stop_reason=None,
                     usage={"input_tokens": reply.prompt_tokens, "output_tokens": 1})
        out = [_event({"type": "message_start", "message": start}), _event({"type": "ping"})]
        for i, block in enumerate(msg["content"]):
            if block["type"] == "text":
                out.append(_event({"type": "content_block_start", "index": i,
                                   "content_block": {"type": "text", "text": ""}}))
                words = block["text"].split(" ")
                for j, w in enumerate(words):
                    out.append(_event({"type": "content_block_delta", "index": i, "delta": {
                        "type": "text_delta", "text": w if j == 0 else " " + w}}))
            else:
                out.append(_event({"type": "content_block_start", "index": i,
                                   "content_block": dict(block, input={})}))
                text = json.dumps(block["input"])
                for j in range(0, len(text), 8):
                    out.append(_event({"type": "content_block_delta", "index": i, "delta": {
                        "type": "input_json_delta", "partial_json": text[j:j + 8]}}))
            out.append(_event({"type": "content_block_stop", "index": i}))
        out.append(_event({"type": "message_delta",
                           "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                           "usage": {"output_tokens": reply.completion_tokens}}))
        out.append(_event({"type": "message_stop"}))
        return out

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.script:
            reply = self.script.popleft()
        else:
            reply = Reply(content="echo: " + _last_user(body.get("messages") or []))
        if reply.status != 200:
            return JSONResponse({"type": "error", "error": {
                "type": ERROR_TYPES.get(reply.status, "api_error"), "message": reply.error}},
                status_code=reply.status)
        if not body.get("stream"):
            return JSONResponse(self.message(body, reply))
        events = self.events(body, reply)
        self.stream_bytes.append(b"".join(events))

        async def gen() -> Any:
            for n, e in enumerate(events):
                if reply.cut_after is not None and n >= reply.cut_after:
                    raise ConnectionAbortedError("scripted cut")
                yield e
            if reply.linger_s:  # the connection stays open after message_stop
                await asyncio.sleep(reply.linger_s)

        return StreamingResponse(gen(), media_type="text/event-stream")
