"""Stripping think-augmented tool calls from a Chat Completions stream.

The argument deltas of an augmented call are held back per (choice, call
index) and sent as one clean delta — same id, type, name and index, the
stripped arguments — in the chunk that carries the choice's `finish_reason`
(or, for a stream that never says it, before `[DONE]` / the end). Text,
reasoning and calls to tools molt did not augment pass through at once,
unchanged, so they are not delayed. Parallel calls keep their indexes, so an
OpenAI client assembles exactly the calls the model produced.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from proxy.tafc import JSON, Plan, strip_arguments


@dataclass(slots=True)
class _Call:
    index: int
    id: str | None
    type: str
    name: str | None
    augmented: bool
    arguments: list[str] = field(default_factory=list)


class StreamStripper:
    """Feed parsed `chat.completion.chunk` objects; get back what the client should see."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._calls: dict[tuple[int, int], _Call] = {}
        self.think: list[JSON] = []
        self.flags: list[str] = []
        self._template: JSON = {}

    def feed(self, chunk: JSON) -> JSON | None:
        """The chunk to send on (changed in place), or None when nothing is left of it."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return chunk
        if not self._template:
            self._template = {k: chunk[k] for k in ("id", "object", "created", "model",
                                                   "system_fingerprint") if k in chunk}
        emptied = True
        for choice in choices:
            if not isinstance(choice, dict):
                emptied = False
                continue
            ci = choice.get("index", 0) if isinstance(choice.get("index", 0), int) else 0
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                keep = [tc for tc in delta["tool_calls"] if not self._hold(ci, tc)]
                if keep:
                    delta["tool_calls"] = keep
                else:
                    del delta["tool_calls"]
            if choice.get("finish_reason") is not None:
                flushed = self._flush(ci)
                if flushed:
                    if not isinstance(delta, dict):
                        delta = choice["delta"] = {}
                    delta["tool_calls"] = sorted(
                        [*delta.get("tool_calls", []), *flushed], key=lambda c: c.get("index", 0))
            if (not isinstance(delta, dict) or delta or choice.get("finish_reason") is not None
                    or choice.get("logprobs") is not None):
                emptied = False
        if emptied and choices and not chunk.get("usage"):
            return None
        return chunk

    def finish(self) -> list[JSON]:
        """Chunks for calls still held when the stream ends without a finish_reason."""
        out = []
        for ci in sorted({ci for ci, _ in self._calls}):
            flushed = self._flush(ci)
            if flushed:
                out.append({**self._template, "object": "chat.completion.chunk", "choices": [
                    {"index": ci, "delta": {"tool_calls": flushed}, "finish_reason": None}]})
        return out

    def _hold(self, ci: int, tc: Any) -> bool:
        if not isinstance(tc, dict):
            return False
        ti = tc.get("index", 0) if isinstance(tc.get("index", 0), int) else 0
        fn: dict[str, Any] = tc["function"] if isinstance(tc.get("function"), dict) else {}
        call = self._calls.get((ci, ti))
        if call is None:
            name = fn.get("name") if isinstance(fn.get("name"), str) else None
            call = _Call(ti, tc.get("id"), tc.get("type") or "function", name,
                         self.plan.for_tool(name) is not None)
            self._calls[(ci, ti)] = call
        if not call.augmented:
            return False
        if tc.get("id") and not call.id:
            call.id = tc["id"]
        if isinstance(fn.get("arguments"), str):
            call.arguments.append(fn["arguments"])
        return True

    def _flush(self, ci: int) -> list[JSON]:
        out: list[JSON] = []
        for key in sorted(k for k in self._calls if k[0] == ci):
            call = self._calls.pop(key)
            if not call.augmented:
                continue
            tool = self.plan.for_tool(call.name)
            assert tool is not None
            s = strip_arguments("".join(call.arguments), tool)
            self.flags += s.flags
            self.think += [{"source": "tafc", "call_id": call.id, "tool": call.name, "text": t}
                           for t in s.think]
            piece: JSON = {"index": call.index, "type": call.type,
                           "function": {"name": call.name, "arguments": s.arguments}}
            if call.id is not None:
                piece["id"] = call.id
            out.append(piece)
        return out


def _event_end(buf: bytes) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    for sep in (b"\n\n", b"\r\n\r\n"):
        i = buf.find(sep)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, i + len(sep))
    return best


def _data(chunk: JSON) -> bytes:
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


def _event(raw: bytes, stripper: StreamStripper) -> bytes:
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    data = [ln[5:].lstrip() for ln in lines if ln.startswith(b"data:")]
    if len(data) != 1:
        return raw + b"\n\n"
    payload = data[0]
    if payload.strip() == b"[DONE]":
        return b"".join(_data(c) for c in stripper.finish()) + raw + b"\n\n"
    try:
        chunk = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return raw + b"\n\n"
    if not isinstance(chunk, dict):
        return raw + b"\n\n"
    out = stripper.feed(chunk)
    return b"" if out is None else _data(out)


async def strip_sse(chunks: AsyncIterator[bytes], stripper: StreamStripper) -> AsyncIterator[bytes]:
    """An SSE byte stream with augmented calls stripped; other events pass as they are."""
    buf = b""
    async for piece in chunks:
        buf += piece
        out = b""
        while (cut := _event_end(buf)) is not None:
            out += _event(buf[: cut[0]], stripper)
            buf = buf[cut[1]:]
        if out:
            yield out
    tail = b"".join(_data(c) for c in stripper.finish())
    if buf.strip():
        tail = (_event(buf.strip(), stripper) if not tail else tail + buf)
    if tail:
        yield tail
