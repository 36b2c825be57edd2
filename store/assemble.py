"""Rebuild a chat completion from the SSE chunks of an OpenAI-format stream.

The proxy passes chunks through untouched and keeps the raw bytes; this runs
in the recorder, off the request path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from store.records import TurnRecord


def iter_sse_data(raw: Iterable[bytes]) -> Iterable[str]:
    """The `data:` payloads of an SSE byte stream, whatever the chunk boundaries."""
    buf = b""
    for piece in raw:
        buf += piece
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
                yield payload.decode("utf-8", "replace")
    if buf.strip().startswith(b"data:"):
        yield buf.strip()[5:].lstrip().decode("utf-8", "replace")


def _event_end(buf: bytes) -> tuple[int, int] | None:
    for sep in (b"\n\n", b"\r\n\r\n"):
        i = buf.find(sep)
        if i >= 0:
            return (i, i + len(sep))
    return None


def assemble_stream(raw: Iterable[bytes]) -> tuple[dict[str, Any], bool, dict[str, Any] | None]:
    """Return (completion, saw_done, error_event) from a chat.completion.chunk stream."""
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
        except json.JSONDecodeError:
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
        for ch in chunk.get("choices") or []:
            _merge_choice(choices, ch)
    completion["choices"] = [choices[i] for i in sorted(choices)]
    return completion, saw_done, error


def _merge_choice(choices: dict[int, dict[str, Any]], ch: dict[str, Any]) -> None:
    i = int(ch.get("index", 0))
    slot = choices.setdefault(
        i, {"index": i, "message": {"role": "assistant", "content": None}, "finish_reason": None}
    )
    msg = slot["message"]
    delta = ch.get("delta") or {}
    if delta.get("role"):
        msg["role"] = delta["role"]
    for text_key in ("content", "reasoning_content", "refusal"):
        if delta.get(text_key) is not None:
            msg[text_key] = (msg.get(text_key) or "") + delta[text_key]
    for tc in delta.get("tool_calls") or []:
        calls = msg.setdefault("tool_calls", [])
        j = int(tc.get("index", len(calls)))
        while len(calls) <= j:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[j]
        if tc.get("id"):
            call["id"] = tc["id"]
        if tc.get("type"):
            call["type"] = tc["type"]
        fn = tc.get("function") or {}
        if fn.get("name"):
            call["function"]["name"] += fn["name"]
        if fn.get("arguments"):
            call["function"]["arguments"] += fn["arguments"]
    if ch.get("finish_reason") is not None:
        slot["finish_reason"] = ch["finish_reason"]
    if ch.get("logprobs") is not None:
        lp = slot.setdefault("logprobs", {"content": []})
        lp["content"].extend((ch["logprobs"] or {}).get("content") or [])


def finalize_turn(rec: TurnRecord) -> None:
    """Fill a turn's derived fields (content, tool calls, usage...) from its response.

    For a streamed turn the response is first assembled from the raw chunks. A
    stream that ended without `[DONE]` and without an error is marked
    incomplete unless its status already says why (client disconnect).
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
            rec.response = json.loads(rec.response_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec.response = {"unparsed": rec.response_bytes[:10_000].decode("utf-8", "replace")}
        rec.response_bytes = None
    resp = rec.response
    if not isinstance(resp, dict):
        return
    rec.response_model = resp.get("model") if isinstance(resp.get("model"), str) else None
    usage = resp.get("usage") or {}
    if isinstance(usage, dict):
        rec.input_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
        rec.output_tokens = usage.get("completion_tokens", usage.get("output_tokens"))
    choices = resp.get("choices") or []
    if choices and isinstance(choices[0], dict):
        first = choices[0]
        msg = first.get("message") or {}
        rec.content = msg.get("content")
        rec.tool_calls = msg.get("tool_calls") or None
        rec.finish_reason = first.get("finish_reason")
        if rec.think is None and msg.get("reasoning_content"):
            rec.think = [{"source": "reasoning_content", "text": msg["reasoning_content"]}]
