"""A native Messages answer (the fake Messages provider's) in molt's internal chat form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.anthropic.record import ChunkTap, completion_of
from proxy.anthropic.response import to_message
from proxy.sse_assembly import SSEEvents, assemble_stream
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_llm import Reply

BODY = {"model": "claude-fake", "stream": True}
REPLIES = [Reply(content="Sunny in Oslo."),
           Reply(content="Both.", tool_calls=[("get_weather", {"city": "Oslo"}),
                                              ("get_time", {"tz": "Europe/Rome"})]),
           Reply(tool_calls=[("noop", {})])]


def _tapped(events: list[bytes]) -> list[bytes]:
    tap, reader, out = ChunkTap(), SSEEvents(), []
    for e in events:
        for i in range(0, len(e), 7):  # any cut of the upstream's bytes
            out.extend(tap.feed(p) for p in reader.feed(e[i:i + 7]))
    return [b for b in out if b]


@pytest.mark.parametrize("reply", REPLIES)
def test_a_native_stream_records_what_the_native_message_says(reply: Reply) -> None:
    fake = FakeAnthropic()
    message = fake.message(BODY, reply)
    assembled, saw_done, error = assemble_stream(_tapped(fake.events(BODY, reply)))
    assert saw_done and error is None
    whole = completion_of(message)
    for key in ("id", "model", "usage"):
        assert assembled[key] == whole[key], key
    # the streamed arguments are the upstream's own text: the same JSON, maybe spaced otherwise
    for c in (assembled, whole):
        for call in c["choices"][0]["message"].get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    assert assembled["choices"] == whole["choices"]


@pytest.mark.parametrize("reply", REPLIES)
def test_completion_of_is_the_inverse_of_to_message(reply: Reply) -> None:
    message = FakeAnthropic().message(BODY, reply)
    back = to_message(completion_of(message), message_id=message["id"], model=message["model"])
    assert back == message


def test_cache_counts_are_prompt_tokens_and_errors_are_recorded() -> None:
    c = completion_of({"content": [{"type": "thinking", "thinking": "hm"}], "stop_reason": "max_tokens",
                       "usage": {"input_tokens": 5, "cache_read_input_tokens": 20,
                                 "cache_creation_input_tokens": 3, "output_tokens": 2}})
    assert c["usage"] == {"prompt_tokens": 28, "completion_tokens": 2, "total_tokens": 30,
                          "prompt_tokens_details": {"cached_tokens": 20}}
    assert c["choices"][0]["finish_reason"] == "length"
    assert c["choices"][0]["message"]["reasoning_content"] == "hm"
    events: list[Any] = [(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                          b'"message":"Overloaded"}}\n\n')]
    _, saw_done, error = assemble_stream(_tapped(events))
    assert not saw_done and error == {"type": "overloaded_error", "message": "Overloaded"}
