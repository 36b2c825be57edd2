"""The one reader of OpenAI chat shapes: right on real shapes, total on any other JSON."""

from __future__ import annotations

from typing import Any

from store.chat_shapes import (
    ToolCall,
    answer_calls,
    answer_message,
    offered_tools,
    tool_calls,
    tool_names,
    tool_schemas,
)

ODD: list[Any] = [None, 5, "s", True, [], {}, [None], [5], ["x"], {"a": 1}, [{"function": 5}],
                  [{"function": {"name": 7, "arguments": {"q": 1}}}], {"choices": [None, 5]}]


def test_real_shapes() -> None:
    msg = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "find", "arguments": '{"q": "a"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "ping", "arguments": ""}},
    ]}
    calls = tool_calls(msg)
    assert calls == [ToolCall("call_1", "find", '{"q": "a"}'), ToolCall("call_2", "ping", "")]
    assert [c.args() for c in calls] == [{"q": "a"}, {}]
    assert calls[0].call_text() == 'find({"q": "a"})'
    completion = {"choices": [{"index": 0, "message": msg}, {"index": 1, "message": {
        "role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "x", "arguments": "[1]"}}]}}]}
    assert answer_message(completion) is msg
    assert [(c.name, c.args()) for c in answer_calls(completion)] == [
        ("find", {"q": "a"}), ("ping", {}), ("x", {})]
    body = {"tools": [{"type": "function", "function": {"name": "find", "parameters": {}}},
                      {"name": "flat"}, {"type": "function", "function": {"name": "find"}}],
            "functions": [{"name": "legacy"}]}
    assert tool_names(body["tools"]) == ["find", "flat", "find"]
    assert offered_tools(body) == {"find", "flat", "legacy"}
    assert list(tool_schemas(body)) == ["find", "flat"]
    assert tool_schemas(body)["find"] == {"name": "find", "parameters": {}}


def test_total_on_any_json() -> None:
    for v in ODD:
        for shape in (v, {"tool_calls": v}, {"choices": v}, {"choices": [{"message": v}]},
                      {"tools": v, "functions": v}):
            tool_calls(shape)
            answer_message(shape)
            answer_calls(shape)
            offered_tools(shape)
            tool_schemas(shape)
            tool_names(v)
    # a non-string name or arguments is read as JSON text, never raised on
    odd = tool_calls({"tool_calls": [{"function": {"name": 7, "arguments": {"q": 1}}}]})
    assert odd == [ToolCall("", "7", '{"q": 1}')] and odd[0].args() == {"q": 1}
