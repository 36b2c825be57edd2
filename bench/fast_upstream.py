"""A fast fake OpenAI-compatible upstream for benchmarks (aiohttp, canned bodies).

    python -m bench.fast_upstream --port 9100 [--chunks 20]
"""

from __future__ import annotations

import argparse
import json

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


def make_app(chunks: int) -> web.Application:
    stream = chunk_bytes(chunks)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=COMPLETION, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in stream:
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
