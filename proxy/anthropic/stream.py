"""An OpenAI chat.completion.chunk stream as a Messages event stream, incrementally.

`MessagesEncoder` (a `proxy.streaming.StreamEncoder`) reads the upstream's
SSE bytes, cut anywhere, and answers Anthropic's events as soon as each
upstream event is complete (`MessageStream` does the translation):
`message_start` and one `ping` (with the first upstream event, so the time to
first token stays the upstream's), then per content block
`content_block_start`, `content_block_delta` (`text_delta` or
`input_json_delta`), `content_block_stop`; at the end `message_delta` (stop
reason, usage) and `message_stop`. A failure after the 200 (an upstream
error, an in-band `{"error": ...}` chunk, a stream cut before its finish)
becomes an `error` event, which ends the stream.

Blocks never interleave, as Anthropic's own streams: one block is open at a
time. Text is streamed live; so is a tool call's arguments while its block is
open. A tool call that starts while another call's block is open waits
(buffered) until that block may close, which is when its arguments so far
are a complete JSON object (nothing more can follow then), or at the finish;
text that arrives meanwhile waits likewise. Waiting blocks open in the order
they first appeared. An upstream that sends parallel
calls one after another (OpenAI, vLLM) is therefore streamed live, and one
that interleaves their fragments still gets each call whole and in order.
Only the first choice is translated (Messages has no `n`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy.anthropic.errors import error_event, error_type, in_band_type
from proxy.anthropic.response import stop_reason, tool_use_id
from proxy.anthropic.tokens import estimate_tokens
from proxy.errors import ProxyError
from proxy.sse_assembly import SSEEvents

JSON = dict[str, Any]
TEXT = -1  # the key of "the text block" among tool-call indexes
_MAX_INDEX = 1024
INCOMPLETE = "the upstream stream ended before the model finished its answer"


def sse(event: JSON) -> bytes:
    """One Messages SSE event."""
    name: str = event["type"]
    return (b"event: " + name.encode() + b"\ndata: "
            + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")


@dataclass(slots=True)
class _Call:
    id: str | None = None
    name: str = ""
    args: list[str] = field(default_factory=list)
    state: str = "new"  # new | pending | open | closed

    def complete(self) -> bool:
        """Its arguments so far are a whole JSON object: nothing more can be appended."""
        try:
            return isinstance(json.loads("".join(self.args)), dict)
        except (ValueError, RecursionError):
            return False


class MessageStream:
    """Feed parsed upstream chunks; get back the bytes of Messages events."""

    def __init__(self, *, message_id: str, model: str, input_tokens: int) -> None:
        self.message_id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self.started = False
        self.ended = False  # message_stop or an error event has been sent
        self.error: tuple[str, str] | None = None  # (type, message) of the error event sent
        self.finish_reason: str | None = None
        self.saw_done = False
        self.usage: JSON | None = None
        self.late_fragments = 0  # argument text for a call whose block had closed (dropped)
        self._out: list[bytes] = []
        self._calls: dict[int, _Call] = {}
        self._open: int | None = None  # TEXT or a tool-call index
        self._open_index = -1
        self._next_index = 0
        self._pending: list[int] = []  # keys waiting, in order of first appearance
        self._held_text: list[str] = []
        self._emitted_chars = 0
        self._any_tool = False

    # -- events -----------------------------------------------------------------------------

    def _emit(self, event: JSON) -> None:
        self._out.append(sse(event))

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _start_message(self) -> None:
        if self.started:
            return
        self.started = True
        self._emit({"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}})
        self._emit({"type": "ping"})

    def _open_block(self, key: int) -> None:
        index = self._open_index = self._next_index
        self._next_index += 1
        self._open = key
        if key == TEXT:
            block: JSON = {"type": "text", "text": ""}
        else:
            call = self._calls[key]
            call.state = "open"
            block = {"type": "tool_use", "id": tool_use_id(call.id), "name": call.name, "input": {}}
            self._any_tool = True
        self._emit({"type": "content_block_start", "index": index, "content_block": block})

    def _delta(self, key: int, piece: str) -> None:
        if not piece:
            return
        self._emitted_chars += len(piece)
        delta = ({"type": "text_delta", "text": piece} if key == TEXT
                 else {"type": "input_json_delta", "partial_json": piece})
        self._emit({"type": "content_block_delta", "index": self._open_index, "delta": delta})

    def _close_block(self) -> None:
        if self._open is None:
            return
        if self._open != TEXT:
            self._calls[self._open].state = "closed"
        self._emit({"type": "content_block_stop", "index": self._open_index})
        self._open = None

    def _open_with_held(self, key: int) -> None:
        self._open_block(key)
        if key == TEXT:
            held, self._held_text = "".join(self._held_text), []
            self._delta(TEXT, held)
        else:
            self._delta(key, "".join(self._calls[key].args))

    # -- blocks -----------------------------------------------------------------------------

    def _can_switch(self) -> bool:
        return self._open is None or self._open == TEXT or self._calls[self._open].complete()

    def _advance(self) -> None:
        """Open the waiting blocks in order while the open one may close; the last stays open.

        A waiting call whose name is not known yet cannot start its block: it stops the line.
        """
        while self._pending and self._can_switch():
            key = self._pending[0]
            if key != TEXT and not self._calls[key].name:
                return
            self._close_block()
            self._pending.pop(0)
            self._open_with_held(key)

    def _flush_all(self) -> None:
        self._close_block()
        for k in self._pending:
            self._open_with_held(k)
            self._close_block()
        self._pending.clear()

    def _text(self, piece: str) -> None:
        if self._open == TEXT:
            self._delta(TEXT, piece)
            return
        self._held_text.append(piece)
        if TEXT not in self._pending:
            self._pending.append(TEXT)
        self._advance()

    def _call_index(self, tc: JSON) -> int:
        i = tc.get("index")
        if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < _MAX_INDEX:
            return i
        known = [k for k in self._calls]
        if not known or (isinstance(tc.get("id"), str) and tc["id"]
                         and tc["id"] not in {c.id for c in self._calls.values()}):
            return max(known, default=-1) + 1
        return known[-1]

    def _tool(self, tc: JSON) -> None:
        key = self._call_index(tc)
        call = self._calls.setdefault(key, _Call())
        fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
        assert isinstance(fn, dict)
        if isinstance(tc.get("id"), str) and tc["id"] and call.id is None:
            call.id = tc["id"]
        if isinstance(fn.get("name"), str) and call.state in ("new", "pending"):
            call.name += fn["name"]
        piece = fn.get("arguments") if isinstance(fn.get("arguments"), str) else ""
        assert isinstance(piece, str)
        if call.state == "open":
            call.args.append(piece)
            self._delta(key, piece)
            if self._pending and piece.rstrip().endswith("}"):
                self._advance()
            return
        if call.state == "closed":
            if piece.strip():
                self.late_fragments += 1
            return
        call.args.append(piece)
        if call.state == "new":
            call.state = "pending"
            self._pending.append(key)
        self._advance()

    # -- the upstream's chunks ----------------------------------------------------------------

    def feed(self, chunk: Any) -> bytes:
        """Events for one parsed upstream chunk (b"" when it adds nothing)."""
        if self.ended or not isinstance(chunk, dict):
            return b""
        self._start_message()
        if "error" in chunk:
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else err
            self._fail(in_band_type(err), str(message or "upstream error"))
            return self._take()
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            assert isinstance(delta, dict)
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    self._text(delta[key])
            calls = delta.get("tool_calls")
            for tc in calls if isinstance(calls, list) else ():
                if isinstance(tc, dict):
                    self._tool(tc)
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                self.finish_reason = finish
                self._flush_all()
        return self._take()

    def feed_data(self, payload: str) -> bytes:
        """Events for one SSE `data:` payload (a JSON chunk, or `[DONE]`)."""
        if payload.strip() == "[DONE]":
            self.saw_done = True
            return b""
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):
            return b""
        return self.feed(chunk)

    def _fail(self, etype: str, message: str) -> None:
        self.error = (etype, message)
        self.ended = True
        self._out.append(error_event(etype, message))

    def fail(self, etype: str, message: str) -> bytes:
        """End the stream with an `error` event (a failure after the 200)."""
        if self.ended:
            return b""
        self._start_message()
        self._fail(etype, message)
        return self._take()

    def _final_usage(self) -> JSON:
        if self.usage is None:  # an upstream that sent no counts: molt's estimate
            return {"output_tokens": estimate_tokens(self._emitted_chars)}
        u = self.usage
        prompt = u.get("prompt_tokens") if isinstance(u.get("prompt_tokens"), int) else None
        details = u.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        cached = cached if isinstance(cached, int) and cached > 0 else 0
        completion = u.get("completion_tokens")
        out: JSON = {"output_tokens": completion if isinstance(completion, int) and completion >= 0
                     else estimate_tokens(self._emitted_chars)}
        if prompt is not None:
            out["input_tokens"] = max(prompt - cached, 0)
        if cached:
            out["cache_read_input_tokens"] = cached
        return out

    def finish(self) -> bytes:
        """The end: open blocks closed, then `message_delta` and `message_stop` (or an error)."""
        if self.ended:
            return b""
        self._start_message()
        if self.finish_reason is None and not self.saw_done:
            self._flush_all()
            self._fail("api_error", INCOMPLETE)
            return self._take()
        self._flush_all()
        self._emit({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(self.finish_reason, self._any_tool),
                              "stop_sequence": None},
                    "usage": self._final_usage()})
        self._emit({"type": "message_stop"})
        self.ended = True
        return self._take()


class MessagesEncoder:
    """A `proxy.streaming.StreamEncoder`: the upstream's chunk SSE bytes, cut anywhere, in;
    Messages events out, as soon as each upstream event is complete."""

    def __init__(self, stream: MessageStream) -> None:
        self.stream = stream
        self._events = SSEEvents()

    def chunk(self, piece: bytes) -> bytes:
        return b"".join([self.stream.feed_data(p) for p in self._events.feed(piece)])

    def error(self, exc: ProxyError) -> bytes:
        return self.stream.fail(error_type(exc.status), exc.message)

    def end(self) -> bytes:
        rest = b"".join([self.stream.feed_data(p) for p in self._events.close()])
        return rest + self.stream.finish()
