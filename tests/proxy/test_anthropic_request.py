"""Messages requests, as the official anthropic SDK builds them, in molt's internal chat form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.anthropic.request import to_chat
from proxy.errors import InvalidRequest
from proxy.sessions import message_key
from tests.fakes.tiny_model import WEATHER_TOOL
from tests.proxy.anthropic_sdk import sdk_body

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def test_text_system_and_sampling_fields() -> None:
    body = sdk_body(model="claude-x", max_tokens=64, system="You are terse.",
                    messages=[{"role": "user", "content": "Hello"}],
                    stop_sequences=["END"], metadata={"user_id": "u-1"},
                    extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 5})
    assert to_chat(body) == {
        "model": "claude-x", "max_tokens": 64, "stop": ["END"], "user": "u-1",
        "temperature": 0.2, "top_p": 0.9, "top_k": 5,
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Hello"}],
    }


def test_system_blocks_join_and_cache_control_is_dropped() -> None:
    body = sdk_body(model="m", max_tokens=8, messages=[{"role": "user", "content": "q"}],
                    system=[{"type": "text", "text": "Part one."},
                            {"type": "text", "text": "Part two.",
                             "cache_control": {"type": "ephemeral"}}])
    chat = to_chat(body)
    assert chat["messages"][0] == {"role": "system", "content": "Part one.\n\nPart two."}


def test_tool_use_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    body = sdk_body(
        model="m", max_tokens=100, tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2",
                 "content": [{"type": "text", "text": "city not found"}], "is_error": True},
                {"type": "text", "text": "And tomorrow?"}]},
        ])
    chat = to_chat(body)
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": WEATHER["input_schema"]}}]
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is False
    # byte for byte an OpenAI client's tool (a chat template renders this JSON as it is)
    assert json.dumps(chat["tools"]) == json.dumps([WEATHER_TOOL])
    user, assistant, r1, r2, follow = chat["messages"]
    assert user == {"role": "user", "content": "Weather in Oslo and Rome?"}
    assert assistant == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "toolu_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "toolu_2", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]}
    assert r1 == {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"}
    # the internal form has no error flag: the text says so, for the model and molt's readers
    assert r2 == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: city not found"}
    assert follow == {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}


def test_assistant_text_blocks_rejoin_to_the_answer_molt_recorded() -> None:
    """A streamed answer split into text blocks comes back as the one string it was,
    so the session tracker sees the continuation of the recorded answer."""
    recorded = {"role": "assistant", "content": "Hello there", "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    body = sdk_body(model="m", max_tokens=5, messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Hello "},
            {"type": "tool_use", "id": "call_0", "name": "f", "input": {"a": 1}},
            {"type": "text", "text": "there"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": "ok"}]}])
    assistant = to_chat(body)["messages"][1]
    assert message_key(assistant) == message_key(recorded)


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    body = sdk_body(model="m", max_tokens=5, tools=[WEATHER], tool_choice=choice,
                    messages=[{"role": "user", "content": "x"}])
    chat = to_chat(body)
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_images_pass_as_image_url_parts() -> None:
    body = sdk_body(model="m", max_tokens=5, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.org/a.jpg"}},
        {"type": "text", "text": "What is this?"}]}])
    assert to_chat(body)["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "image_url", "image_url": {"url": "https://example.org/a.jpg"}},
        {"type": "text", "text": "What is this?"}]


def test_stream_asks_the_upstream_for_usage() -> None:
    body = sdk_body(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    body["stream"] = True
    chat = to_chat(body)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_structured_output_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    body = sdk_body(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                    output_config={"format": {"type": "json_schema", "schema": schema}})
    assert to_chat(body)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_thinking_blocks_are_dropped_not_refused() -> None:
    body = {"model": "m", "max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "x"},
                         {"role": "assistant", "content": [
                             {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                             {"type": "text", "text": "y"}]}]}
    chat = to_chat(body)
    assert chat["messages"][1] == {"role": "assistant", "content": "y"}
    assert "thinking" not in chat


def _refused(body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        to_chat(body)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(("body", "where"), [
    ([], ""),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages.0.content.0.text"),
    ({"model": "m", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]},
     "stream"),
    ({"model": "m", "max_tokens": 5, "temperature": "hot", "messages": [{"role": "user", "content": "x"}]},
     "temperature"),
    ({"model": "m", "max_tokens": 5, "tool_choice": {"type": "maybe"},
      "messages": [{"role": "user", "content": "x"}]}, "tool_choice.type"),
    ({"model": "m", "max_tokens": 5, "tools": [{"name": "t"}],
      "messages": [{"role": "user", "content": "x"}]}, "tools.0.input_schema"),
])
def test_bad_bodies_name_the_field(body: Any, where: str) -> None:
    err = _refused(body)
    assert err.message.startswith(where) if where else "JSON object" in err.message


@pytest.mark.parametrize(("block", "says"), [
    ({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}, "document"),
    ({"type": "image", "source": {"type": "file", "file_id": "file_1"}}, "image source 'file'"),
    ({"type": "tool_result", "tool_use_id": "t",
      "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}, "images inside"),
])
def test_blocks_the_internal_form_cannot_carry_are_refused_clearly(block: dict[str, Any], says: str) -> None:
    err = _refused({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]})
    assert says in err.message


def test_server_tools_are_refused_clearly() -> None:
    err = _refused({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                    "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert err.message.startswith("tools.0.type") and "server tools" in err.message


def test_count_tokens_bodies_need_no_max_tokens() -> None:
    chat = to_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}, need_max_tokens=False)
    assert "max_tokens" not in chat and json.dumps(chat)
