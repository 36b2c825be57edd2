"""CPU that molt's OpenAI Responses translation adds to a request, in process.

Measures `proxy/responses/` alone (no HTTP, no upstream): a non-streamed
request (parse the Responses body, build the chat body, turn the completion
into a Response object, both serialised) and a 20-word stream (chat SSE
chunks in, Responses events out). Process CPU time, best and median of a
few repetitions.

    python -m bench.responses_translation [--calls 2000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from proxy.responses.output import from_completion
from proxy.responses.request import chat_body, parse_request
from proxy.responses.stream import ResponsesEncoder, ResponsesStream

p = argparse.ArgumentParser()
p.add_argument("--calls", type=int, default=2000)
p.add_argument("--reps", type=int, default=5)
p.add_argument("--words", type=int, default=18, help="text pieces in the stream")
args = p.parse_args()

RESP = "resp_0191c2a0b1c2d3e4f5a6b7c8d9e0f1a2"
TOOLS = [{"type": "function", "name": f"tool_{i}", "description": "d" * 80,
          "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}
         for i in range(5)]
BODY = {"model": "m", "instructions": "Be terse.", "tools": TOOLS, "input": [
    {"role": "user", "content": "Weather in Oslo?"},
    {"type": "function_call", "call_id": "call_0", "name": "tool_0", "arguments": "{\"a\":\"x\"}"},
    {"type": "function_call_output", "call_id": "call_0", "output": "12 C"}]}
COMPLETION = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop", "message": {
                  "role": "assistant", "content": "It is 12 C and sunny in Oslo today."}}],
              "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}}
RAW = json.dumps(BODY).encode()
STREAM_REQ = parse_request({**BODY, "stream": True})


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    c = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(c)}\n\n".encode()


CHUNKS = [_chunk({"role": "assistant", "content": ""}),
          *(_chunk({"content": f" w{i}"}) for i in range(args.words)),
          _chunk({}, "stop"),
          (b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
           b'"usage":{"prompt_tokens":40,"completion_tokens":18,"total_tokens":58}}\n\n'),
          b"data: [DONE]\n\n"]


def non_streamed() -> None:
    req = parse_request(json.loads(RAW))
    json.dumps(chat_body(req).body)
    json.dumps(from_completion(RESP, req, COMPLETION)).encode()


def streamed() -> None:
    enc = ResponsesEncoder(ResponsesStream(RESP, STREAM_REQ))
    for c in CHUNKS:
        enc.chunk(c)
    enc.end()


def per_call_ms(fn: Callable[[], None], calls: int) -> list[float]:
    for _ in range(200):
        fn()
    out = []
    for _ in range(args.reps):
        t = time.process_time()
        for _ in range(calls):
            fn()
        out.append((time.process_time() - t) / calls * 1000)
    return out


print(f"stream: {len(CHUNKS)} chat chunks ({args.words} text pieces)")
for name, fn, calls in (("non-streamed", non_streamed, args.calls),
                        ("stream", streamed, max(1, args.calls // 2))):
    ms = per_call_ms(fn, calls)
    print(f"{name:13s} CPU ms per request: best {min(ms):.3f}  median {statistics.median(ms):.3f}")
