"""OpenAI-format SSE read back: the events of a byte stream, and the chat completion they make.

The proxy passes chunks through untouched and keeps the raw bytes;
`finalize_turn` runs in the recorder, off the request path, and rebuilds the
completion. `SSEEvents` is the incremental reader under it, for code that
reads a stream as it goes (a route translating it to another protocol).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from store.records import TurnRecord


class SSEEvents:
    """The `data:` payloads of an SSE byte stream, fed piece by piece, whatever the cuts."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, piece: bytes) -> list[str]:
        """The payloads completed by `piece` (an event's `data:` lines joined by newlines)."""
        buf = self._buf + piece
        out: list[str] = []
        while True:
            cut = _event_end(buf)
            if cut is None:
                break
            event, buf = buf[: cut[0]], buf[cut[1] :]
            data = [
                line[5:].lstrip() if line.startswith(b"data:") else None
                for line in event.replace(b"\r\n", b"\n").split(b"\n")
            ]
            payload = b"\n".join(d for d in data if d is not None)
            if payload:
                out.append(payload.decode("utf-8", "replace"))
        self._buf = buf
        return out

    def close(self) -> list[str]:
        """What is left once the stream ended: a last event without its blank line."""
        rest, self._buf = self._buf.strip(), b""
        return [rest[5:].lstrip().decode("utf-8", "replace")] if rest.startswith(b"data:") else []


def iter_sse_data(raw: Iterable[bytes]) -> Iterable[str]:
    """The `data:` payloads of an SSE byte stream, whatever the chunk boundaries."""
    events = SSEEvents()
    for piece in raw:
        yield from events.feed(piece)
    yield from events.close()


def _event_end(buf: bytes) -> tuple[int, int] | None:
    """Where the first event ends: the earliest blank line, whichever line ending it uses."""
    best: tuple[int, int] | None = None
    for sep in (b"\n\n", b"\r\n\r\n"):
        i = buf.find(sep)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, i + len(sep))
    return best


def _as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _as_index(v: Any, default: int) -> int:
    """A choice or tool-call index from an upstream: a small non-negative int, else `default`."""
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _MAX_INDEX:
        return v
    return default


# Upstreams number choices and tool calls from 0; an index past this is noise.
_MAX_INDEX = 1024


def assemble_stream(raw: Iterable[bytes]) -> tuple[dict[str, Any], bool, dict[str, Any] | None]:
    """Return (completion, saw_done, error_event) from a chat.completion.chunk stream.

    Total: any JSON shape in any chunk is skipped or kept as far as it fits the
    OpenAI format; nothing here raises on upstream data.
    """
    completion: dict[str, Any] = {"object": "chat.completion", "choices": []}
    choices: dict[int, dict[str, Any]] = {}
    saw_done = False
    error: dict[str, Any] | None = None
    for data in iter_sse_data(raw):
        if data.strip() == "[DONE]":
            saw_done = True
            continue
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk)}
            continue
        for key in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(key) is not None:
                completion[key] = chunk[key]
        if chunk.get("usage"):
            completion["usage"] = chunk["usage"]
        for ch in _as_list(chunk.get("choices")):
            if isinstance(ch, dict):
                _merge_choice(choices, ch)
    completion["choices"] = [choices[i] for i in sorted(choices)]
    return completion, saw_done, error


def _append_text(msg: dict[str, Any], key: str, piece: Any) -> None:
    if piece is None:
        return
    text = piece if isinstance(piece, str) else json.dumps(piece)
    prev = msg.get(key)
    msg[key] = (prev if isinstance(prev, str) else "") + text


def _merge_choice(choices: dict[int, dict[str, Any]], ch: dict[str, Any]) -> None:
    i = _as_index(ch.get("index"), 0)
    slot = choices.setdefault(
        i, {"index": i, "message": {"role": "assistant", "content": None}, "finish_reason": None}
    )
    msg = slot["message"]
    delta = _as_dict(ch.get("delta"))
    if isinstance(delta.get("role"), str) and delta["role"]:
        msg["role"] = delta["role"]
    for text_key in ("content", "reasoning_content", "refusal"):
        _append_text(msg, text_key, delta.get(text_key))
    for tc in _as_list(delta.get("tool_calls")):
        if not isinstance(tc, dict):
            continue
        calls = msg.setdefault("tool_calls", [])
        j = _as_index(tc.get("index"), len(calls))
        while len(calls) <= j:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[j]
        if isinstance(tc.get("id"), str) and tc["id"]:
            call["id"] = tc["id"]
        if isinstance(tc.get("type"), str) and tc["type"]:
            call["type"] = tc["type"]
        fn = _as_dict(tc.get("function"))
        _append_text(call["function"], "name", fn.get("name") or None)
        _append_text(call["function"], "arguments", fn.get("arguments") or None)
    if ch.get("finish_reason") is not None:
        slot["finish_reason"] = ch["finish_reason"]
    if ch.get("logprobs") is not None:
        lp = slot.setdefault("logprobs", {"content": []})
        lp["content"].extend(_as_list(_as_dict(ch["logprobs"]).get("content")))


def _token_count(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return v


def finalize_turn(rec: TurnRecord) -> None:
    """Fill a turn's derived fields (content, tool calls, usage...) from its response.

    For a streamed turn the response is first assembled from the raw chunks. A
    stream that ended without `[DONE]` and without an error is marked
    incomplete unless its status already says why (client disconnect).
    Total: whatever JSON the upstream sent, this never raises; a field that
    does not have the expected shape is left empty.
    """
    if rec.stream_chunks is not None:
        completion, saw_done, err = assemble_stream(rec.stream_chunks)
        rec.stream_chunks = None
        rec.response = completion
        if err is not None and rec.status == "ok":
            rec.status = "upstream_error"
            rec.error = err
        elif not saw_done and rec.status == "ok":
            rec.status = "upstream_error"
            rec.error = rec.error or {"message": "stream ended before [DONE]"}
    if rec.response_bytes is not None:
        try:
            parsed = json.loads(rec.response_bytes)
        except (ValueError, RecursionError):
            parsed = None
        rec.response = (
            parsed if isinstance(parsed, dict)
            else {"unparsed": rec.response_bytes[:10_000].decode("utf-8", "replace")}
        )
        rec.response_bytes = None
    resp = rec.response
    if not isinstance(resp, dict):
        return
    rec.response_model = resp.get("model") if isinstance(resp.get("model"), str) else None
    usage = _as_dict(resp.get("usage"))
    rec.input_tokens = _token_count(usage.get("prompt_tokens", usage.get("input_tokens")))
    rec.output_tokens = _token_count(usage.get("completion_tokens", usage.get("output_tokens")))
    choices = _as_list(resp.get("choices"))
    if choices and isinstance(choices[0], dict):
        first = choices[0]
        msg = _as_dict(first.get("message"))
        content = msg.get("content")
        rec.content = (
            content if isinstance(content, str | None) else json.dumps(content, default=str)
        )
        calls = [c for c in _as_list(msg.get("tool_calls")) if isinstance(c, dict)]
        rec.tool_calls = calls or None
        finish = first.get("finish_reason")
        rec.finish_reason = finish if isinstance(finish, str) else None
        reasoning = msg.get("reasoning_content")
        if rec.think is None and isinstance(reasoning, str) and reasoning:
            rec.think = [{"source": "reasoning_content", "text": reasoning}]
