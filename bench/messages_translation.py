"""CPU that molt's Messages translation adds per request (`proxy.anthropic`), in-process.

Arguments at the top; prints microseconds per request for: a request in
(`to_chat` + `validate_chat`), a non-streamed answer out (`to_message`), a
20-chunk text stream and a 20-chunk stream with two tool calls out
(`MessagesEncoder`, fed the upstream's bytes event by event). The hot-path
budget (DESIGN.md) is 0.5 ms per non-streamed request and 1 ms per 20-chunk
stream for all of molt's own work.

    python -m bench.messages_translation
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from proxy.anthropic.request import to_chat
from proxy.anthropic.response import to_message
from proxy.anthropic.stream import MessagesEncoder, MessageStream
from proxy.protocol import validate_chat

ROUNDS = 2_000
REPEATS = 5


def _chunks(text_pieces: int, calls: int) -> list[bytes]:
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def c(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    out = [c({"role": "assistant", "content": ""})]
    out += [c({"content": f" word{i}"}) for i in range(text_pieces)]
    for k in range(calls):
        args = json.dumps({"city": "Oslo", "date": "2026-12-02", "k": k})
        out.append(c({"tool_calls": [{"index": k, "id": f"call_{k}", "type": "function",
                                      "function": {"name": "get_weather", "arguments": ""}}]}))
        out += [c({"tool_calls": [{"index": k, "function": {"arguments": args[j:j + 12]}}]})
                for j in range(0, len(args), 12)]
    out.append(c({}, "tool_calls" if calls else "stop"))
    out.append(b"data: " + json.dumps(dict(base, choices=[], usage={
        "prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70})).encode() + b"\n\n")
    return [*out, b"data: [DONE]\n\n"]


REQUEST = {"model": "m", "max_tokens": 512, "system": "You are a helpful agent.", "stream": True,
           "tools": [{"name": "get_weather", "description": "Weather for a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
           "messages": [{"role": "user", "content": "Weather in Oslo?"},
                        {"role": "assistant", "content": [
                            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                        {"role": "user", "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny"}]}]}
COMPLETION = {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": "Sunny, 12 degrees."}}],
    "usage": {"prompt_tokens": 50, "completion_tokens": 8, "total_tokens": 58}}


def _stream(chunks: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        enc = MessagesEncoder(MessageStream(message_id="msg", model="m", input_tokens=50))
        for piece in chunks:
            enc.chunk(piece)
        enc.end()
    return run


def _us(fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t = time.process_time()
        for _ in range(ROUNDS):
            fn()
        best = min(best, (time.process_time() - t) / ROUNDS * 1e6)
    return best


def main() -> None:
    text20, tools20 = _chunks(18, 0), _chunks(4, 2)
    cases = {
        "request in (to_chat + validate_chat)": lambda: validate_chat(to_chat(REQUEST)),
        "non-streamed answer out (to_message)": lambda: to_message(COMPLETION, message_id="msg", model="m"),
        f"text stream out ({len(text20) - 1} chunks)": _stream(text20),
        f"tool-call stream out ({len(tools20) - 1} chunks, 2 calls)": _stream(tools20),
    }
    for name, fn in cases.items():
        print(f"{name:48s} {_us(fn):8.1f} us CPU (best of {REPEATS} x {ROUNDS})")


if __name__ == "__main__":
    main()
