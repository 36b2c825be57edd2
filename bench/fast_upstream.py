"""A fast fake OpenAI-compatible upstream for benchmarks (aiohttp, canned bodies).

    python -m bench.fast_upstream --port 9100 [--chunks 20]

A request without tools gets canned text. A request with tools gets parallel
tool calls of its first two tools, as a model following the schemas would
write them: a value for every property, a `think` string where the schema
offers one (TAFC's, first), `{think, value}` where a property is such an
object; streamed, the arguments come in deltas over `--chunks` chunks. Bodies
are made once per distinct tools list.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 20},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50},
}).encode()


def chunk_bytes(n: int) -> list[bytes]:
    def c(delta: dict[str, object], finish: str | None = None) -> bytes:
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                "model": "bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    out = [c({"role": "assistant", "content": ""})]
    out += [c({"content": f"tok{i} "}) for i in range(n - 2)]
    out.append(c({}, "stop"))
    out.append(b"data: [DONE]\n\n")
    return out


def _value(name: str, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "x"
    props = schema.get("properties") or {}
    if schema.get("type") == "object" and set(props) == {"think", "value"}:
        return {"think": f"what {name} should be", "value": _value(name, props["value"])}
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: _value(k, v) for k, v in props.items()}
    if kind == "array":
        return [_value(name, schema.get("items"))]
    if kind in ("integer", "number"):
        return 3
    if kind == "boolean":
        return True
    return "I should check the arguments first." if name == "think" else f"{name}-value"


def tool_calls(tools: list[Any]) -> list[tuple[str, str]]:
    """(name, arguments JSON) for the first two function tools."""
    out = []
    for t in tools[:2]:
        fn = t.get("function") or {}
        params = fn.get("parameters") or {}
        args = {k: _value(k, v) for k, v in (params.get("properties") or {}).items()}
        out.append((str(fn.get("name")), json.dumps(args)))
    return out


def tool_bodies(tools: list[Any], n: int) -> tuple[bytes, list[bytes]]:
    """The non-streamed completion and the stream's chunks answering with tool calls."""
    calls = tool_calls(tools)
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}
        for i, (name, args) in enumerate(calls)]}
    completion = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}}).encode()

    def c(delta: dict[str, object], finish: str | None = None) -> bytes:
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                "model": "bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    per_call = max(1, (n - 2) // max(1, len(calls)))
    out = [c({"role": "assistant", "content": None})]
    for i, (name, args) in enumerate(calls):
        step = max(1, -(-len(args) // per_call))
        pieces = [args[k:k + step] for k in range(0, len(args), step)]
        out.append(c({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                      "function": {"name": name, "arguments": pieces[0]}}]}))
        out += [c({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in pieces[1:]]
    out.append(c({}, "tool_calls"))
    out.append(b"data: [DONE]\n\n")
    return completion, out


def make_app(chunks: int) -> web.Application:
    stream = chunk_bytes(chunks)
    with_tools: dict[str, tuple[bytes, list[bytes]]] = {}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tools = body.get("tools")
        completion, pieces = COMPLETION, stream
        if isinstance(tools, list) and tools:
            key = json.dumps(tools, sort_keys=True)
            if key not in with_tools:
                with_tools[key] = tool_bodies(tools, chunks)
            completion, pieces = with_tools[key]
        if not body.get("stream"):
            return web.Response(body=completion, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def models(_r: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--chunks", type=int, default=20)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.chunks), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
