"""The `<tool_call>` parser, whole and streamed piece by piece."""

from __future__ import annotations

import json

import pytest

from modeling.toolcalls import Text, ToolCall, ToolCallStream, parse_tool_calls

TWO_CALLS = (
    'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n'
    '<tool_call>{"name": "get_time", "arguments": {"tz": "Asia/Tokyo"}}</tool_call>'
)


def _stream(text: str, size: int) -> tuple[str, list[ToolCall]]:
    s = ToolCallStream()
    events = []
    for i in range(0, len(text), size):
        events += s.feed(text[i:i + size])
    events += s.finish()
    content = "".join(e.text for e in events if isinstance(e, Text))
    return content, [e for e in events if isinstance(e, ToolCall)]


def test_several_calls_after_text() -> None:
    r = parse_tool_calls(TWO_CALLS)
    assert r.content == "Let me check."
    assert [c.name for c in r.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(r.tool_calls[1].arguments) == {"tz": "Asia/Tokyo"}
    assert len({c.id for c in r.tool_calls}) == 2
    assert all(c.id.startswith("call_") for c in r.tool_calls)
    assert r.tool_calls[0].openai()["type"] == "function"


def test_only_calls_has_no_content() -> None:
    r = parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}</tool_call>\n')
    assert r.content is None
    assert r.tool_calls[0].arguments == "{}"


def test_plain_text_is_kept() -> None:
    assert parse_tool_calls("Hello <world> and <tool").content == "Hello <world> and <tool"
    assert parse_tool_calls("").content == ""


@pytest.mark.parametrize("bad", [
    '<tool_call>{"name": "f", "arguments": {"a": 1}</tool_call>',   # broken JSON
    '<tool_call>{"arguments": {}}</tool_call>',                     # no name
    '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',       # arguments not an object
    '<tool_call>{"name": "f", "arguments": {}}',                    # unterminated
])
def test_malformed_call_is_text(bad: str) -> None:
    r = parse_tool_calls("x " + bad)
    assert r.tool_calls == []
    assert r.content == "x " + bad


def test_string_arguments_are_accepted() -> None:
    r = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert json.loads(r.tool_calls[0].arguments) == {"a": 1}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 1000])
def test_streaming_in_any_pieces_equals_whole(size: int) -> None:
    whole = parse_tool_calls(TWO_CALLS)
    content, calls = _stream(TWO_CALLS, size)
    assert content == whole.content
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole.tool_calls]


def test_streaming_text_is_not_held_back_needlessly() -> None:
    s = ToolCallStream()
    assert s.feed("Hello wor") == [Text("Hello wor")]
    # a possible start of "<tool_call>" waits; a mismatch releases it
    assert s.feed(" <tool") == []
    assert s.feed("box>") == [Text(" <toolbox>")]
