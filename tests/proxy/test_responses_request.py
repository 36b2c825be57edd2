"""Responses requests -> molt's internal chat body (proxy/responses/request.py, input_items.py)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.responses.request import chat_body, parse_request

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
           "strict": True}


def _chat(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return chat_body(parse_request(body), history).body


def test_string_input_instructions_tools_and_sampling() -> None:
    body = _chat({
        "model": "gpt-fake", "input": "Weather in Oslo?", "instructions": "Be terse.",
        "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 64, "temperature": 0.2, "top_p": 1, "parallel_tool_calls": False,
        "user": "u-1", "store": True, "metadata": {"k": "v"}, "include": ["x"],
        "truncation": "disabled",
    })
    assert body == {
        "model": "gpt-fake",
        "messages": [{"role": "system", "content": "Be terse."},
                     {"role": "user", "content": "Weather in Oslo?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": WEATHER["parameters"], "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_completion_tokens": 64, "temperature": 0.2, "top_p": 1,
        "parallel_tool_calls": False, "user": "u-1",
    }


def test_item_list_becomes_chat_messages() -> None:
    body = _chat({"model": "m", "input": [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Oslo?"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "and this"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
         "arguments": "{\"city\":\"Oslo\"}"},
        {"type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "12 C"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "09:00"}]},
        {"type": "function_call", "call_id": "call_c", "name": "get_time", "arguments": "{}"},
    ]})
    assert body["messages"] == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Oslo?"},
        {"role": "user", "content": [
            {"type": "text", "text": "and this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "12 C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "09:00"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    ]


def test_stream_asks_for_usage_and_text_formats_translate() -> None:
    body = _chat({"model": "m", "input": "hi", "stream": True, "stream_options": {"x": 1},
                  "text": {"format": {"type": "json_schema", "name": "answer", "strict": True,
                                      "schema": {"type": "object"}}, "verbosity": "low"},
                  "reasoning": {"effort": "low", "summary": "auto"}})
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object"}, "strict": True}}
    assert body["verbosity"] == "low" and body["reasoning_effort"] == "low"
    assert "text" not in body and "reasoning" not in body
    assert _chat({"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}})[
        "response_format"] == {"type": "json_object"}


def test_unknown_fields_are_forwarded_and_responses_fields_are_not() -> None:
    body = _chat({"model": "m", "input": "hi", "top_k": 3, "vendor_knob": {"x": 1},
                  "previous_response_id": "resp_x", "store": False, "metadata": {},
                  "max_tool_calls": 3, "background": False})
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 3,
                    "vendor_knob": {"x": 1}}


def test_history_goes_after_the_instructions_and_before_the_input() -> None:
    history = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "one"}]
    turn = chat_body(parse_request({"model": "m", "input": "second", "instructions": "I"}), history)
    assert [m["content"] for m in turn.body["messages"]] == ["I", "first", "one", "second"]
    assert turn.followup_from == 1
    assert chat_body(parse_request({"model": "m", "input": "x"})).followup_from == 0
    assert chat_body(parse_request({"model": "m", "input": "x", "store": False})).followup_from is None


def test_echo_fields_are_kept() -> None:
    req = parse_request({"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": "required",
                         "metadata": {"a": "b"}, "store": False, "previous_response_id": "resp_1"})
    assert req.tools == [WEATHER] and req.tool_choice == "required"
    assert req.metadata == {"a": "b"} and req.store is False
    assert req.previous_response_id == "resp_1" and req.parallel_tool_calls is True


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"input": "x"}, "model", "model parameter"),
    ({"model": "m"}, "input", "'input'"),
    ({"model": "m", "input": []}, "input", "must not be empty"),
    ({"model": "m", "input": 5}, "input", "string or an array"),
    ({"model": "m", "input": [{"type": "web_search_call", "id": "ws"}]}, "input[0].type",
     "web_search_call"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role", "one of"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "input[0].content[0].type", "input_audio"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url", "image_url"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments", "string"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": 3}]},
     "input[0].output", "string or an array"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "function tools"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "non-empty"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": []}]},
     "tools[0].parameters", "object"),
    ({"model": "m", "input": "x", "tool_choice": "any"}, "tool_choice", "auto, none, required"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice", "function"),
    ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens", "positive"),
    ({"model": "m", "input": "x", "temperature": "hot"}, "temperature", "number"),
    ({"model": "m", "input": "x", "stream": "yes"}, "stream", "boolean"),
    ({"model": "m", "input": "x", "background": True}, "background", "not supported"),
    ({"model": "m", "input": "x", "top_logprobs": 2}, "top_logprobs", "not supported"),
    ({"model": "m", "input": "x", "truncation": "auto"}, "truncation", "disabled"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type", "json_schema"),
    ({"model": "m", "input": "x", "previous_response_id": 7}, "previous_response_id", "string"),
])
def test_bad_requests_name_the_parameter(body: dict[str, Any], param: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_request(body)
    assert err.value.status == 400
    assert err.value.envelope()["error"]["param"] == param
    assert says in err.value.message


def test_not_an_object() -> None:
    with pytest.raises(InvalidRequest):
        parse_request(["model"])
