"""Chat completions and chat SSE -> Response objects and Responses events (proxy/responses/)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.errors import UpstreamTimeout
from proxy.responses.output import from_completion, response_id, turn_id
from proxy.responses.request import ResponsesRequest, chat_body, parse_request
from proxy.responses.stream import ResponsesEncoder, ResponsesStream
from tests.fakes.fake_llm import FakeLLM, Reply

RESP = "resp_0191c2a0b1c2d3e4f5a6b7c8d9e0f1a2"
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
         {"type": "function", "name": "get_time", "parameters": {"type": "object"}}]


def _req(**extra: Any) -> ResponsesRequest:
    return parse_request({"model": "gpt-fake", "input": "Weather?", "tools": TOOLS, **extra})


def _sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def _chunks(reply: Reply, stream: bool = True) -> list[dict[str, Any]]:
    req = _req(stream=stream)
    return FakeLLM().chunks(chat_body(req).body, reply)


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        out.append(data)
    return out


def _run(raw: bytes, cut: int | None = None, req: ResponsesRequest | None = None) -> tuple[list[dict[str, Any]], ResponsesStream]:
    """Feed `raw` whole, or `cut` bytes at a time."""
    s = ResponsesStream(RESP, req or _req(stream=True), created_at=1700000000.0)
    out = s.start()
    pieces = [raw] if cut is None else [raw[i:i + cut] for i in range(0, len(raw), cut)]
    for p in pieces:
        out += s.feed(p)
    out += s.close()
    return _events(out), s


def test_ids_map_both_ways() -> None:
    assert response_id("turn_0191c2a0b1c2d3e4f5a6b7c8d9e0f1a2") == RESP
    assert turn_id(RESP) == "turn_0191c2a0b1c2d3e4f5a6b7c8d9e0f1a2"
    for bad in ("resp_", "resp_xyz", "turn_0191c2a0b1c2d3e4f5a6b7c8d9e0f1a2", RESP + "0", RESP.upper()):
        assert turn_id(bad) is None


def test_text_completion_is_a_valid_response() -> None:
    completion = FakeLLM().completion({"model": "gpt-fake"}, Reply(content="Sunny, 12 C."))
    obj = from_completion(RESP, _req(instructions="Be terse.", metadata={"a": "b"}), completion)
    r = Response.model_validate(obj)
    assert r.id == RESP and r.object == "response" and r.status == "completed"
    assert r.output_text == "Sunny, 12 C."
    assert r.output[0].id == "msg_0191c2a0b1c2d3e4f5a6b7c8d9e0f1a2_0"
    assert r.instructions == "Be terse." and r.metadata == {"a": "b"}
    assert [t.name for t in r.tools] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (11, 7, 18)
    assert r.created_at == 1700000000


def test_tool_calls_become_function_call_items() -> None:
    completion = FakeLLM().completion({"model": "gpt-fake"}, Reply(
        tool_calls=[("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "UTC"})]))
    r = Response.model_validate(from_completion(RESP, _req(), completion))
    calls = [(o.type, o.call_id, o.name, json.loads(o.arguments)) for o in r.output]  # type: ignore[union-attr]
    assert calls == [("function_call", "call_0", "get_weather", {"city": "Oslo"}),
                     ("function_call", "call_1", "get_time", {"tz": "UTC"})]
    assert r.status == "completed" and r.output_text == ""


def test_length_makes_an_incomplete_response_and_usage_details_carry() -> None:
    completion = {"model": "m", "created": 5, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "cut"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 2},
                  "completion_tokens_details": {"reasoning_tokens": 1}}}
    r = Response.model_validate(from_completion(RESP, _req(), completion))
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None
    assert r.usage.input_tokens_details.cached_tokens == 2
    assert r.usage.output_tokens_details.reasoning_tokens == 1


def test_an_empty_or_odd_completion_still_makes_a_response() -> None:
    for completion in ({}, {"choices": []}, {"choices": [{"message": None}]},
                       {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, 3],
                                                 "tool_calls": [{"function": None}, 4]}}]}):
        Response.model_validate(from_completion(RESP, _req(), completion))


def test_refusal_is_a_refusal_part() -> None:
    completion = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "No."},
                               "finish_reason": "stop"}]}
    r = Response.model_validate(from_completion(RESP, _req(), completion))
    assert r.output[0].content[0].type == "refusal"  # type: ignore[union-attr]


TEXT_EVENTS = (["response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added"] + ["response.output_text.delta"] * 4
               + ["response.output_text.done", "response.content_part.done",
                  "response.output_item.done", "response.completed"])


@pytest.mark.parametrize("cut", [None, 1, 7, 64])
def test_text_stream_events_wherever_the_bytes_are_cut(cut: int | None) -> None:
    events, s = _run(_sse(_chunks(Reply(content="one two three four"))), cut)
    assert [e["type"] for e in events] == TEXT_EVENTS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for e in events:
        EVENTS.validate_python(e)
    assert "".join(e["delta"] for e in events if e["type"].endswith("text.delta")) == "one two three four"
    assert events[-4]["text"] == "one two three four"
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "one two three four" and final.status == "completed"
    assert final.usage is not None and final.usage.input_tokens == 11
    assert s.response == events[-1]["response"]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_stream_and_non_stream_make_the_same_response() -> None:
    reply = Reply(content="Calling.", tool_calls=[("get_weather", {"city": "Oslo"}),
                                                   ("get_time", {"tz": "UTC"})])
    events, _ = _run(_sse(_chunks(reply)), 5)
    streamed = events[-1]["response"]
    plain = from_completion(RESP, _req(stream=True), FakeLLM().completion({"model": "gpt-fake"}, reply),
                            created_at=1700000000.0)
    for key in ("completed_at",):
        streamed.pop(key), plain.pop(key)
    assert streamed == plain


def test_tool_call_stream_is_accepted_by_the_sdk_accumulator() -> None:
    reply = Reply(content="Calling.", tool_calls=[("get_weather", {"city": "Oslo"}),
                                                   ("get_time", {"tz": "UTC"})])
    events, _ = _run(_sse(_chunks(reply)), 3)
    kinds = [e["type"] for e in events]
    assert kinds.count("response.output_item.added") == 3
    assert kinds.count("response.function_call_arguments.done") == 2
    # each item is closed before the next opens
    opened = [i for i, k in enumerate(kinds) if k == "response.output_item.added"]
    closed = [i for i, k in enumerate(kinds) if k == "response.output_item.done"]
    assert all(c < o for c, o in zip(closed, opened[1:], strict=False))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=TOOLS, text_format=omit)  # type: ignore[arg-type]
    for e in events:
        state.handle_event(EVENTS.validate_python(e))
    snapshot = state.accumulate_event(EVENTS.validate_python(events[-1]))
    assert [o.type for o in snapshot.output] == ["message", "function_call", "function_call"]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(d["name"], json.loads(d["arguments"])) for d in done] == [
        ("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "UTC"})]
    final = Response.model_validate(events[-1]["response"])
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]
    assert final.output[1].call_id == "call_0"  # type: ignore[union-attr]


def test_an_error_chunk_fails_the_response() -> None:
    chunks = _chunks(Reply(content="one two three"))[:3]
    raw = _sse(chunks, done=False) + b'data: {"error": {"message": "upstream broke", "code": "x"}}\n\n'
    events, _ = _run(raw)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "upstream broke" and events[-2]["code"] == "x"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["message"] == "upstream broke"
    assert "response.output_item.done" in kinds  # the open item closes, as incomplete
    for e in events:
        EVENTS.validate_python(e)


def test_a_cut_stream_fails_and_fail_after_close_adds_nothing() -> None:
    events, s = _run(_sse(_chunks(Reply(content="one two three"))[:2], done=False))
    assert events[-1]["type"] == "response.failed"
    assert s.fail("late") == b"" and s.close() == b""


def test_fail_reports_what_molt_saw() -> None:
    s = ResponsesStream(RESP, _req(stream=True))
    s.start()
    s.feed(_sse(_chunks(Reply(content="one two"))[:2], done=False))
    events = _events(s.fail("upstream timed out", "upstream_timeout"))
    assert events[-2]["code"] == "upstream_timeout" and events[-1]["type"] == "response.failed"


def test_length_finish_streams_response_incomplete() -> None:
    chunks = _chunks(Reply(content="one two"))
    for c in chunks:
        for ch in c.get("choices") or []:
            if ch.get("finish_reason"):
                ch["finish_reason"] = "length"
    events, _ = _run(_sse(chunks))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    EVENTS.validate_python(events[-1])


def test_the_encoder_opens_with_the_first_bytes_whatever_comes_first() -> None:
    enc = ResponsesEncoder(ResponsesStream(RESP, _req(stream=True)))
    events = _events(enc.error(UpstreamTimeout("upstream timed out")))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "error",
                                           "response.failed"]
    assert events[2]["code"] == "upstream_timeout"
    enc = ResponsesEncoder(ResponsesStream(RESP, _req(stream=True)))
    raw = _sse(_chunks(Reply(content="a b")))
    out = enc.chunk(raw[:10]) + enc.chunk(raw[10:]) + enc.end()
    assert [e["type"] for e in _events(out)][:2] == ["response.created", "response.in_progress"]
    assert _events(out)[-1]["type"] == "response.completed"
