"""Chat completions as Messages objects, errors in Anthropic's shape, and the token estimate,
checked with the official anthropic SDK's own types and exception classes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from proxy.anthropic.errors import error_type, proxy_error_body
from proxy.anthropic.request import to_chat
from proxy.anthropic.response import RAW_ARGUMENTS, to_message
from proxy.anthropic.tokens import IMAGE_TOKENS, estimate_chat_tokens, estimate_tokens
from proxy.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFoundError,
    PayloadTooLarge,
    PermissionDenied,
    ProxyError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.proxy.anthropic_sdk import sdk_message


def _completion(reply: Reply) -> dict[str, Any]:
    return FakeLLM().completion({"model": "gpt-fake"}, reply)


def test_text_answer() -> None:
    out = to_message(_completion(Reply(content="Sunny.", prompt_tokens=12, completion_tokens=3)),
                     message_id="msg_1", model="claude-x")
    msg = anthropic.types.Message.model_validate(out)
    assert msg.content[0].type == "text" and msg.content[0].text == "Sunny."
    assert (msg.stop_reason, msg.model, msg.id) == ("end_turn", "claude-x", "msg_1")
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (12, 3)
    assert sdk_message(out).model_dump() == msg.model_dump()


def test_parallel_tool_calls_become_tool_use_blocks() -> None:
    out = to_message(_completion(Reply(tool_calls=[("get_weather", {"city": "Oslo"}),
                                                   ("get_time", {"tz": "UTC"})])),
                     message_id="msg_2", model="m")
    msg = sdk_message(out)
    assert msg.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in msg.content] == [  # type: ignore[union-attr]
        ("tool_use", "call_0", "get_weather", {"city": "Oslo"}),
        ("tool_use", "call_1", "get_time", {"tz": "UTC"})]


@pytest.mark.parametrize(("finish", "calls", "reason"), [
    ("stop", False, "end_turn"), ("length", False, "max_tokens"), ("tool_calls", True, "tool_use"),
    ("stop", True, "tool_use"), ("content_filter", False, "refusal"), (None, False, "end_turn"),
])
def test_stop_reasons(finish: str | None, calls: bool, reason: str) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": "x"}
    if calls:
        message["tool_calls"] = [{"id": "c", "type": "function",
                                  "function": {"name": "f", "arguments": "{}"}}]
    out = to_message({"choices": [{"index": 0, "message": message, "finish_reason": finish}]},
                     message_id="m", model="m")
    assert out["stop_reason"] == reason


def test_cached_prompt_tokens_are_cache_reads() -> None:
    comp = _completion(Reply(content="x"))
    comp["usage"] = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                     "prompt_tokens_details": {"cached_tokens": 60}}
    usage = sdk_message(to_message(comp, message_id="m", model="m")).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (40, 60, 5)


def test_malformed_arguments_reach_the_tool_as_written() -> None:
    comp = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1'}},
            {"id": None, "type": "function", "function": {"name": "g", "arguments": ""}}]}}]}
    msg = sdk_message(to_message(comp, message_id="m", model="m"))
    first, second = msg.content
    assert first.input == {RAW_ARGUMENTS: '{"a": 1'}  # type: ignore[union-attr]
    assert second.input == {} and second.id.startswith("toolu_")  # type: ignore[union-attr]


def test_anything_the_upstream_sends_gives_a_valid_message() -> None:
    for junk in ({}, {"choices": []}, {"choices": [None]}, {"choices": [{"message": {"content": 5}}]},
                 {"choices": [{"message": {"content": [{"type": "text", "text": "a"}]}}], "usage": "x"}):
        anthropic.types.Message.model_validate(to_message(junk, message_id="m", model="m"))


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "etype", "sdk_error"), [
    (InvalidRequest("bad", param="messages"), "invalid_request_error", anthropic.BadRequestError),
    (AuthenticationFailed("no key"), "authentication_error", anthropic.AuthenticationError),
    (PermissionDenied("no"), "permission_error", anthropic.PermissionDeniedError),
    (NotFoundError("no model"), "not_found_error", anthropic.NotFoundError),
    (PayloadTooLarge("big"), "request_too_large", anthropic.APIStatusError),
    (RateLimited("slow down", retry_after_s=3), "rate_limit_error", anthropic.RateLimitError),
    (UpstreamError("down"), "api_error", anthropic.InternalServerError),
    (UpstreamTimeout("late"), "timeout_error", anthropic.InternalServerError),
    (UpstreamError("busy", status=529), "overloaded_error", anthropic.InternalServerError),
    (ProxyError("boom"), "api_error", anthropic.InternalServerError),
])
def test_errors_in_anthropics_shape(exc: ProxyError, etype: str, sdk_error: type[Exception]) -> None:
    import httpx2

    from tests.proxy.anthropic_sdk import sdk_client

    body = proxy_error_body(exc, request_id="turn_1")
    assert body["type"] == "error" and body["error"]["type"] == etype
    assert body["request_id"] == "turn_1"
    if etype != "request_too_large":  # the SDK's union lists the types its own API returns
        anthropic.types.ErrorResponse.model_validate(body)
    with sdk_client(lambda _r: httpx2.Response(exc.status, json=body)) as client, \
            pytest.raises(sdk_error) as info:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == exc.status  # type: ignore[attr-defined]
    assert exc.message in str(info.value)


def test_the_param_leads_the_message() -> None:
    body = proxy_error_body(InvalidRequest("must be a number", param="temperature"))
    assert body["error"]["message"] == "temperature: must be a number"
    body = proxy_error_body(InvalidRequest("temperature: must be a number", param="temperature"))
    assert body["error"]["message"] == "temperature: must be a number"


def test_unlisted_statuses_take_their_class() -> None:
    assert (error_type(409), error_type(422), error_type(502), error_type(503)) == (
        "invalid_request_error", "invalid_request_error", "api_error", "overloaded_error")


# -- tokens -----------------------------------------------------------------------------------

def test_estimate_is_molts_four_characters_a_token() -> None:
    assert [estimate_tokens(n) for n in (0, 1, 4, 7, 400)] == [0, 1, 2, 2, 101]
    chat = to_chat({"model": "m", "system": "s" * 40, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "u" * 80},
                                     {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"k": 1}}]},
    ], "tools": [{"name": "f", "input_schema": {"type": "object"}}]}, need_max_tokens=False)
    chars = (40 + len("system") + 80 + len("user") + len("assistant") + len("f") + len('{"k":1}')
             + len(json.dumps(chat["tools"], separators=(",", ":"))))
    assert estimate_chat_tokens(chat) == estimate_tokens(chars) + IMAGE_TOKENS
