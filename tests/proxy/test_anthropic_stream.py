"""OpenAI chunk streams as Messages event streams, read back by the official anthropic SDK."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from proxy.anthropic.response import to_message
from proxy.anthropic.stream import INCOMPLETE, MessagesEncoder, MessageStream
from proxy.errors import UpstreamError
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.proxy.anthropic_sdk import sdk_final

BODY = {"model": "gpt-fake", "stream": True, "stream_options": {"include_usage": True}}


def _sse(chunks: list[Any], done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def _upstream(reply: Reply, body: dict[str, Any] = BODY) -> bytes:
    return _sse(FakeLLM().chunks(body, reply))


def _translate(pieces: list[bytes], *, fail: UpstreamError | None = None,
               input_tokens: int = 3) -> tuple[bytes, MessageStream]:
    """What the encoder sends for these upstream pieces (then the failure, or the end)."""
    ms = MessageStream(message_id="msg_s", model="claude-x", input_tokens=input_tokens)
    enc = MessagesEncoder(ms)
    out = b"".join(enc.chunk(p) for p in pieces)
    return out + (enc.error(fail) if fail is not None else enc.end()), ms


_EVENT = TypeAdapter(anthropic.types.RawMessageStreamEvent)


def _types(raw: bytes) -> list[str]:
    """The event names of a Messages stream (runs of deltas as one), each event checked
    against the SDK's own event types; the SDK's iterator hides pings, so read the bytes."""
    out: list[str] = []
    for event in raw.split(b"\n\n"):
        if not event:
            continue
        name_line, data_line = event.split(b"\n")
        name, data = name_line.removeprefix(b"event: ").decode(), json.loads(data_line[6:])
        assert data["type"] == name
        kind = name
        if name != "ping":
            parsed = _EVENT.validate_python(data)
            if parsed.type == "content_block_delta":
                kind += ":" + parsed.delta.type
            elif parsed.type == "content_block_start":
                kind += ":" + parsed.content_block.type
        if not out or out[-1] != kind or not kind.startswith("content_block_delta"):
            out.append(kind)
    return out


def test_text_stream_equals_the_non_streamed_message() -> None:
    reply = Reply(content="Sunny and twelve degrees in Oslo.", prompt_tokens=21, completion_tokens=8)
    events, _ = _translate([_upstream(reply)])
    assert _types(events) == [
        "message_start", "ping", "content_block_start:text", "content_block_delta:text_delta",
        "content_block_stop", "message_delta", "message_stop"]
    streamed = sdk_final(events)
    whole = to_message(FakeLLM().completion(BODY, reply), message_id="msg_s", model="claude-x")
    assert streamed.model_dump() == anthropic.types.Message.model_validate(whole).model_dump()


def test_parallel_tool_calls_stream_live_one_block_each() -> None:
    reply = Reply(content="Checking both.", tool_calls=[("get_weather", {"city": "Oslo"}),
                                                        ("get_time", {"tz": "Asia/Tokyo"})])
    events, _ = _translate([_upstream(reply)])
    assert _types(events) == [
        "message_start", "ping", "content_block_start:text", "content_block_delta:text_delta",
        "content_block_stop", "content_block_start:tool_use", "content_block_delta:input_json_delta",
        "content_block_stop", "content_block_start:tool_use", "content_block_delta:input_json_delta",
        "content_block_stop", "message_delta", "message_stop"]
    final = sdk_final(events)
    assert final.stop_reason == "tool_use"
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [  # type: ignore[union-attr]
        ("call_0", "get_weather", {"city": "Oslo"}), ("call_1", "get_time", {"tz": "Asia/Tokyo"})]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)


def test_each_upstream_event_is_answered_before_the_next_is_read() -> None:
    """Incremental: the first call's argument deltas go out while the upstream is still on it."""
    chunks = FakeLLM().chunks(BODY, Reply(tool_calls=[("f", {"a": "x" * 30}), ("g", {"b": 1})]))
    enc = MessagesEncoder(MessageStream(message_id="m", model="m", input_tokens=0))
    sent = [enc.chunk(_sse([c], done=False)) for c in chunks]
    # every upstream event is answered at once, but the usage chunk (its counts wait for the end)
    assert all(sent[:-1]) and not sent[-1] and chunks[-1]["choices"] == []
    first_g = next(i for i, c in enumerate(chunks)
                   if (c["choices"] and c["choices"][0]["delta"].get("tool_calls") or [{}])[0].get("index") == 1)
    before = b"".join(sent[:first_g])
    assert before.count(b"input_json_delta") >= 5 and b'"name":"g"' not in before


def test_interleaved_call_fragments_still_give_each_call_whole() -> None:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def tc(i: int, **fn: str) -> dict[str, Any]:
        call: dict[str, Any] = {"index": i, "function": fn}
        if "name" in fn:
            call.update(id=f"call_{i}", type="function")
        return dict(base, choices=[{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])

    chunks = [tc(0, name="f", arguments='{"a":'), tc(1, name="g", arguments='{"b":'),
              tc(0, arguments=' "x"}'), dict(base, choices=[{"index": 0, "delta": {"content": "note"},
                                                             "finish_reason": None}]),
              tc(1, arguments=" 2}"),
              dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])]
    events, ms = _translate([_sse(chunks)])
    final = sdk_final(events)
    calls = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert calls == [("f", {"a": "x"}), ("g", {"b": 2})]
    assert [b.text for b in final.content if b.type == "text"] == ["note"]
    assert ms.late_fragments == 0 and final.stop_reason == "tool_use"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_any_chunk_boundaries_give_the_same_events(cuts: list[int]) -> None:
    raw = _upstream(Reply(content="Grüße aus Oslo — 12 °C", tool_calls=[("f", {"q": "ß" * 5}),
                                                                        ("g", {})]))
    raw = raw.replace(b"\n\n", b"\r\n\r\n", 3)  # both separators
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    whole, _ = _translate([raw])
    split, _ = _translate(pieces)
    assert split == whole
    assert [b.type for b in sdk_final(split).content] == ["text", "tool_use", "tool_use"]


def test_an_upstream_failure_after_the_200_is_an_error_event() -> None:
    raw = _upstream(Reply(content="one two three"))
    partial = raw[: raw.index(b"two")]
    partial = partial[: partial.rindex(b"\n\n") + 2]
    events, ms = _translate([partial], fail=UpstreamError("upstream x reset the connection"))
    assert events.rstrip().endswith(b"}")
    assert ms.error == ("api_error", "upstream x reset the connection")
    assert b"message_stop" not in events
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk_final(events)
    assert "reset the connection" in str(info.value)


def test_an_in_band_error_chunk_is_an_error_event() -> None:
    chunks = FakeLLM().chunks(BODY, Reply(content="a b"))[:2]
    chunks.append({"error": {"message": "rate limited upstream", "type": "rate_limit_error"}})
    events, ms = _translate([_sse(chunks)])
    assert ms.error == ("rate_limit_error", "rate limited upstream")
    with pytest.raises(anthropic.APIStatusError):
        sdk_final(events)


def test_a_stream_cut_before_its_finish_is_an_error_event() -> None:
    chunks = FakeLLM().chunks(BODY, Reply(content="a b c"))[:3]
    events, ms = _translate([_sse(chunks, done=False)])
    assert ms.error == ("api_error", INCOMPLETE)
    assert b"event: error" in events and b"message_stop" not in events


def test_without_upstream_usage_the_counts_are_molts_estimate() -> None:
    reply = Reply(content="x" * 40)
    events, _ = _translate([_upstream(reply, {"model": "m", "stream": True})], input_tokens=123)
    final = sdk_final(events)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (123, 11)


def test_an_empty_stream_still_ends_properly() -> None:
    events, ms = _translate([b"data: [DONE]\n\n"])
    final = sdk_final(events)
    assert final.content == [] and final.stop_reason == "end_turn" and ms.error is None


@st.composite
def _interleaved(draw: st.DrawFn) -> tuple[list[Any], list[dict[str, Any]], str]:
    """Chunks of up to three calls and some text, fragments split and interleaved at random
    (each call's own fragments in order, as an upstream's must be)."""
    n = draw(st.integers(min_value=1, max_value=3))
    inputs = [draw(st.dictionaries(st.sampled_from("abc"), st.integers() | st.text(max_size=6),
                                   max_size=3)) for _ in range(n)]
    queues: list[list[dict[str, Any]]] = []
    for i, args in enumerate(inputs):
        text = json.dumps(args)
        cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=4))))
        parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        frags = [{"index": i, "function": {"arguments": p}} for p in parts]
        frags[0] = {"index": i, "id": f"call_{i}", "type": "function",
                    "function": {"name": f"tool{i}", "arguments": parts[0]}}
        queues.append(frags)
    words = draw(st.lists(st.text(min_size=1, max_size=5), max_size=4))
    queues.append([{"content": w} for w in words])
    order: list[Any] = []
    while any(queues):
        q = draw(st.sampled_from([q for q in queues if q]))
        order.append(q.pop(0))
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [dict(base, choices=[{"index": 0, "finish_reason": None,
                                   "delta": {"content": x["content"]} if "content" in x
                                   else {"tool_calls": [x]}}]) for x in order]
    chunks.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
    return chunks, inputs, "".join(words)


@settings(max_examples=80, deadline=None)
@given(_interleaved())
def test_any_interleaving_of_parallel_calls_gives_every_call_whole(
        case: tuple[list[Any], list[dict[str, Any]], str]) -> None:
    chunks, inputs, text = case
    events, ms = _translate([_sse(chunks)])
    final = sdk_final(events)
    calls = {b.id: (b.name, b.input) for b in final.content if b.type == "tool_use"}
    assert calls == {f"call_{i}": (f"tool{i}", args) for i, args in enumerate(inputs)}
    assert "".join(b.text for b in final.content if b.type == "text") == text
    assert ms.late_fragments == 0 and final.stop_reason == "tool_use"
