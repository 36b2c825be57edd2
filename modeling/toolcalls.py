"""Tool calls in generated text: the `<tool_call>{...}</tool_call>` convention.

Qwen, Hermes and the tiny policy write each call as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, possibly several
in a row and possibly after some text. `ToolCallStream` turns generated text,
fed piece by piece, into events: text deltas and complete tool calls (in
OpenAI form: an id, the name, the arguments as a JSON string). A block that
is not a valid call (bad JSON, no name, unterminated) is given back as text.
`parse_tool_calls` runs the same machine over a whole text, so a streamed
and a non-streamed answer always agree.

Whitespace between text and calls is held back and dropped unless more text
follows, so a reply that is only calls has no content.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as a string (the OpenAI wire form)

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class Text:
    text: str


Event = Text | ToolCall


def decode_call(block: str) -> ToolCall | None:
    """The call inside one `<tool_call>` block, or None when it is not a valid call."""
    try:
        obj = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(new_call_id(), obj["name"], json.dumps(args, ensure_ascii=False))


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that could begin `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


@dataclass
class ToolCallStream:
    buf: str = ""
    in_call: bool = False
    pending_ws: str = ""
    calls: int = 0
    _out: list[Event] = field(default_factory=list)

    def _text(self, text: str) -> None:
        if not text:
            return
        if not text.strip():
            self.pending_ws += text
            return
        stripped = text.rstrip()
        self._out.append(Text(self.pending_ws + stripped))
        self.pending_ws = text[len(stripped):]

    def feed(self, piece: str) -> list[Event]:
        self.buf += piece
        while True:
            if not self.in_call:
                at = self.buf.find(CALL_OPEN)
                if at < 0:
                    keep = _held_prefix(self.buf, CALL_OPEN)
                    self._text(self.buf[: len(self.buf) - keep])
                    self.buf = self.buf[len(self.buf) - keep:]
                    break
                self._text(self.buf[:at])
                self.buf = self.buf[at + len(CALL_OPEN):]
                self.in_call = True
            else:
                end = self.buf.find(CALL_CLOSE)
                if end < 0:
                    break
                block, self.buf = self.buf[:end], self.buf[end + len(CALL_CLOSE):]
                self.in_call = False
                call = decode_call(block)
                if call is None:
                    self._text(CALL_OPEN + block + CALL_CLOSE)
                else:
                    self.pending_ws = ""
                    self.calls += 1
                    self._out.append(call)
        out, self._out = self._out, []
        return out

    def finish(self) -> list[Event]:
        """End of generation: an unterminated call or a held-back tail becomes text."""
        rest = (CALL_OPEN + self.buf) if self.in_call else self.buf
        self.buf, self.in_call = "", False
        self._text(rest)
        self.pending_ws = ""
        out, self._out = self._out, []
        return out


@dataclass(frozen=True, slots=True)
class ParsedReply:
    content: str | None
    tool_calls: list[ToolCall]


def parse_tool_calls(text: str) -> ParsedReply:
    """Split a whole generated text into content and tool calls."""
    s = ToolCallStream()
    events = s.feed(text) + s.finish()
    content = "".join(e.text for e in events if isinstance(e, Text))
    calls = [e for e in events if isinstance(e, ToolCall)]
    return ParsedReply(content if content or not calls else None, calls)
