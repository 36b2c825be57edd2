"""A scripted OpenAI-compatible server: the stand-in for remote LLM providers.

Tests push `Reply` objects onto `fake.script`; each request pops one (or gets
an echo of the last user message). Streams use the exact OpenAI
chat.completion.chunk format: a role chunk, content or tool-call deltas, one
finish_reason, an optional usage chunk, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    error: str = "scripted failure"
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    # Stream only: close the connection after this many chunks.
    cut_after: int | None = None
    # Stream only: keep the connection open this long after `data: [DONE]` (as an upstream may).
    linger_s: float = 0.0
    prompt_tokens: int = 11
    completion_tokens: int = 7
    # Non-streamed only: send these bytes as the HTTP 200 body instead of a completion.
    raw_body: bytes | None = None
    # Hold the reply until the test sets this event (a stream: after its first chunk),
    # so that a test knows the request is in flight without sleeping.
    gate: threading.Event | None = None


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


class FakeLLM:
    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnects = 0
        # Requests whose client (molt) left while the reply was still delayed.
        self.abandoned = 0
        self._changed = threading.Condition()
        # When set and the script is empty, computes the reply from the request body.
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Block the test thread until `predicate()` holds (checked on every request event)."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout_s)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    @staticmethod
    async def _client_left_during(request: Request, delay_s: float) -> bool:
        """Sleep `delay_s`, or less if the client closes the connection first."""
        async def gone() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        waiter = asyncio.create_task(gone())
        sleeper = asyncio.create_task(asyncio.sleep(delay_s))
        done, _ = await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        sleeper.cancel()
        return waiter in done

    async def _models(self, _req: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
        finish = "stop"
        if reply.tool_calls:
            msg["tool_calls"] = [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": n, "arguments": json.dumps(a)}}
                for i, (n, a) in enumerate(reply.tool_calls)
            ]
            finish = "tool_calls"
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model", "fake"), "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": reply.prompt_tokens,
                      "completion_tokens": reply.completion_tokens,
                      "total_tokens": reply.prompt_tokens + reply.completion_tokens},
        }

    def chunks(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                "model": body.get("model", "fake"), "system_fingerprint": "fp_fake"}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}])
            if include_usage:
                c["usage"] = None
            return c

        out = [chunk({"role": "assistant", "content": "" if not reply.tool_calls else None,
                      "refusal": None})]
        if reply.content:
            words = reply.content.split(" ")
            for i, w in enumerate(words):
                out.append(chunk({"content": w if i == 0 else " " + w}))
        for i, (name, args) in enumerate(reply.tool_calls):
            out.append(chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                              "function": {"name": name, "arguments": ""}}]}))
            text = json.dumps(args)
            for j in range(0, len(text), 8):
                out.append(chunk({"tool_calls": [{"index": i,
                                                  "function": {"arguments": text[j:j + 8]}}]}))
        out.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        if include_usage:
            out.append(dict(base, choices=[], usage={
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens}))
        return out

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self._notify()
        if self.script:
            reply = self.script.popleft()
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            reply = Reply(content="echo: " + _last_user(body.get("messages") or []))
        if reply.delay_s and await self._client_left_during(request, reply.delay_s):
            self.abandoned += 1
            self._notify()
            return Response(status_code=499)
        if reply.status != 200:
            return JSONResponse(
                {"error": {"message": reply.error, "type": "server_error", "param": None,
                           "code": None}}, status_code=reply.status)
        if not body.get("stream"):
            if reply.gate is not None:
                await asyncio.to_thread(reply.gate.wait, 30)
            if reply.raw_body is not None:
                return Response(reply.raw_body, media_type="application/json")
            return JSONResponse(self.completion(body, reply))
        chunks = self.chunks(body, reply)

        async def gen() -> Any:
            try:
                for n, c in enumerate(chunks):
                    if reply.cut_after is not None and n >= reply.cut_after:
                        raise ConnectionAbortedError("scripted cut")
                    yield f"data: {json.dumps(c)}\n\n".encode()
                    if n == 0 and reply.gate is not None:
                        await asyncio.to_thread(reply.gate.wait, 30)
                    if reply.chunk_delay_s:
                        await asyncio.sleep(reply.chunk_delay_s)
                yield b"data: [DONE]\n\n"
                if reply.linger_s:
                    await asyncio.sleep(reply.linger_s)
            except asyncio.CancelledError:
                self.disconnects += 1
                self._notify()
                raise

        return StreamingResponse(gen(), media_type="text/event-stream")

