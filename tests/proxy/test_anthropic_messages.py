"""The official anthropic SDK against molt's POST /v1/messages, on a real uvicorn.

Translated (an OpenAI-compatible upstream, the scripted fake) and native (an
upstream that speaks Messages, `tests/fakes/fake_anthropic.py`), streaming
and not, with a tool_use -> tool_result round trip; every turn is read back
from the store in the chat-completions trajectory format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from modeling.blocks import SKILLS_OPEN
from tests.conftest import Molt
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.fakes.server import ServerThread
from tests.fakes.tiny_model import TOOL_PROMPT
from tests.proxy.local_helpers import start_local
from tests.proxy.test_skills_injection import DATA, SYSTEM, seeded  # noqa: F401 - fixture

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


def _sdk(m: Molt, key: str = "x") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=m.url, api_key=key, max_retries=0)


def _turn(m: Molt, raw: Any) -> dict[str, Any]:
    return m.wait_turn(raw.headers["x-molt-turn-id"])


# -- translated: an OpenAI-compatible upstream ------------------------------------------------

def test_text_answer_and_its_turn(fake_llm: FakeLLM, molt: Molt) -> None:
    fake_llm.push(Reply(content="Sunny, 12 degrees.", prompt_tokens=30, completion_tokens=6))
    raw = _sdk(molt).messages.with_raw_response.create(
        model="gpt-fake", max_tokens=50, system="You are terse.", messages=ASK)
    msg = raw.parse()
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "Sunny, 12 degrees."  # type: ignore[union-attr]
    assert (msg.stop_reason, msg.model, msg.usage.input_tokens, msg.usage.output_tokens) == (
        "end_turn", "gpt-fake", 30, 6)
    assert msg.id == "msg_" + raw.headers["x-molt-turn-id"].removeprefix("turn_")
    assert raw.headers["request-id"] == raw.headers["x-molt-turn-id"]
    sent = fake_llm.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "You are terse."}, *ASK]
    assert sent["max_tokens"] == 50
    t = _turn(molt, raw)
    assert (t["status"], t["content"], t["stream"], t["http_status"]) == ("ok", "Sunny, 12 degrees.", False, 200)
    assert t["request"]["messages"] == sent["messages"]
    assert (t["input_tokens"], t["output_tokens"]) == (30, 6)


def test_same_trajectory_format_as_a_chat_turn(fake_llm: FakeLLM, molt: Molt) -> None:
    fake_llm.push(Reply(content="A"), Reply(content="A"))
    a = _sdk(molt).messages.with_raw_response.create(model="gpt-fake", max_tokens=20, messages=ASK)
    b = openai.OpenAI(base_url=molt.base_url, api_key="x", max_retries=0).chat.completions \
        .with_raw_response.create(model="gpt-fake", max_tokens=20, messages=ASK)  # type: ignore[arg-type]
    ta, tb = _turn(molt, a), _turn(molt, b)
    assert ta.keys() == tb.keys()
    for key in ("request", "content", "tool_calls", "finish_reason", "status", "input_tokens",
                "output_tokens", "request_model"):
        assert ta[key] == tb[key], key


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip(fake_llm: FakeLLM, molt: Molt, stream: bool) -> None:
    client = _sdk(molt)
    fake_llm.push(Reply(content="Checking.", tool_calls=[("get_weather", {"city": "Oslo"}),
                                                         ("get_weather", {"city": "Rome"})]),
                  Reply(content="Oslo is sunny; Rome is not found."))
    kw: dict[str, Any] = {"model": "gpt-fake", "max_tokens": 100, "tools": [WEATHER]}
    if stream:
        with client.messages.stream(messages=ASK, **kw) as s:
            first = s.get_final_message()
            first_headers = s.response.headers
    else:
        raw = client.messages.with_raw_response.create(messages=ASK, **kw)
        first, first_headers = raw.parse(), raw.headers
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Oslo"}),
                                                  ("get_weather", {"city": "Rome"})]
    assert fake_llm.requests[-1]["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}]

    follow = [*ASK, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
              {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny"},
                  {"type": "tool_result", "tool_use_id": uses[1].id, "content": "city not found",
                   "is_error": True}]}]
    if stream:
        with client.messages.stream(messages=follow, **kw) as s:  # type: ignore[arg-type]
            text = "".join(s.text_stream)
            second_headers = s.response.headers
    else:
        raw2 = client.messages.with_raw_response.create(messages=follow, **kw)  # type: ignore[arg-type]
        text, second_headers = raw2.parse().content[0].text, raw2.headers  # type: ignore[union-attr]
    assert text == "Oslo is sunny; Rome is not found."
    sent = fake_llm.requests[-1]["messages"]
    assert sent[-2:] == [{"role": "tool", "tool_call_id": uses[0].id, "content": "Sunny"},
                         {"role": "tool", "tool_call_id": uses[1].id, "content": "Error: city not found"}]
    # the tool_result request continues the session of the tool_use answer
    assert second_headers["x-molt-session-id"] == first_headers["x-molt-session-id"]
    t1 = molt.wait_turn(first_headers["x-molt-turn-id"])
    t2 = molt.wait_turn(second_headers["x-molt-turn-id"])
    assert (t1["idx"], t2["idx"]) == (0, 1) and t1["stream"] is stream
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in t1["tool_calls"]] == [
        ("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]
    assert t1["finish_reason"] == "tool_calls" and t2["content"] == text


def test_streamed_event_sequence_and_usage(fake_llm: FakeLLM, molt: Molt) -> None:
    fake_llm.push(Reply(content="one two three", prompt_tokens=9, completion_tokens=3))
    with httpx.stream("POST", molt.url + "/v1/messages", headers={"x-api-key": "x"}, json={
            "model": "gpt-fake", "max_tokens": 10, "stream": True, "messages": ASK}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        names = [line.removeprefix("event: ") for line in r.iter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    final = _sdk(molt)
    fake_llm.push(Reply(content="one two three", prompt_tokens=9, completion_tokens=3))
    with final.messages.stream(model="gpt-fake", max_tokens=10, messages=ASK) as s:
        msg = s.get_final_message()
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (9, 3)
    assert fake_llm.requests[-1]["stream_options"] == {"include_usage": True}


def test_skills_are_injected(fake_llm: FakeLLM, molt_factory: Any, seeded: Path) -> None:  # noqa: F811
    m = molt_factory(skills={"enabled": True, "seed_dir": str(seeded), "top_k": 2, "poll_interval_s": 0.2})
    raw = _sdk(m).messages.with_raw_response.create(
        model="gpt-fake", max_tokens=50, system=SYSTEM["content"],
        messages=[{"role": "user", "content": DATA}])
    sent = fake_llm.requests[-1]["messages"]
    assert sent[0] == SYSTEM and sent[1]["role"] == "system" and sent[1]["content"].startswith(SKILLS_OPEN)
    assert "analyze-spreadsheet" in sent[1]["content"]
    t = _turn(m, raw)
    assert "analyze-spreadsheet" in [s["id"] for s in t["injected_skills"]]
    assert t["skill_generation"] is not None


# -- errors -----------------------------------------------------------------------------------

def test_bad_key_is_an_authentication_error(molt_factory: Any) -> None:
    m = molt_factory(server={"admin_key": "molt-admin-test-key-0123456789"})
    with pytest.raises(anthropic.AuthenticationError) as info:
        _sdk(m, key="wrong").messages.create(model="gpt-fake", max_tokens=5, messages=ASK)
    assert info.value.status_code == 401
    assert info.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "invalid or revoked API key"}}
    # x-api-key and Authorization: Bearer are both keys
    good = _sdk(m, key="molt-admin-test-key-0123456789").messages.create(
        model="gpt-fake", max_tokens=5, messages=ASK)
    assert good.content[0].text == "echo: Weather in Oslo?"  # type: ignore[union-attr]
    bearer = anthropic.Anthropic(base_url=m.url, auth_token="molt-admin-test-key-0123456789",
                                 max_retries=0).messages.create(model="gpt-fake", max_tokens=5, messages=ASK)
    assert bearer.stop_reason == "end_turn"


@pytest.mark.parametrize(("body", "status", "etype", "says"), [
    (b"{not json", 400, "invalid_request_error", "not valid JSON"),
    ({"model": "gpt-fake", "messages": ASK}, 400, "invalid_request_error", "max_tokens"),
    ({"model": "gpt-fake", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]},
     400, "invalid_request_error", "messages.0.content.0.type"),
    ({"model": "nope", "max_tokens": 5, "messages": ASK}, 404, "not_found_error", "nope"),
])
def test_bad_requests_in_anthropics_shape(molt: Molt, body: Any, status: int, etype: str, says: str) -> None:
    kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(molt.url + "/v1/messages", headers={"x-api-key": "x",
                                                       "anthropic-version": "2023-06-01"}, **kw)
    assert r.status_code == status
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == etype and says in data["error"]["message"]


def test_upstream_failures(fake_llm: FakeLLM, molt: Molt) -> None:
    fake_llm.push(Reply(status=500, error="boom"))
    with pytest.raises(anthropic.InternalServerError) as info:
        _sdk(molt).messages.create(model="gpt-fake", max_tokens=5, messages=ASK)
    assert info.value.status_code == 502 and info.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    turn_id = info.value.response.headers["x-molt-turn-id"]
    assert molt.wait_turn(turn_id)["status"] == "upstream_error"

    fake_llm.push(Reply(content="a b c d e f", cut_after=3))
    with pytest.raises(anthropic.APIStatusError), _sdk(molt).messages.stream(
            model="gpt-fake", max_tokens=5, messages=ASK) as s:
        s.get_final_message()
    t = molt.wait_turn(s.response.headers["x-molt-turn-id"])
    assert t["status"] == "upstream_error"


def test_count_tokens(molt: Molt) -> None:
    raw = _sdk(molt).messages.with_raw_response.count_tokens(
        model="gpt-fake", system="s" * 40, messages=[{"role": "user", "content": "u" * 80}], tools=[WEATHER])
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                               "parameters": WEATHER["input_schema"]}}]
    chars = 40 + len("system") + 80 + len("user") + len(json.dumps(tools, separators=(",", ":")))
    assert raw.parse().input_tokens == chars // 4 + 1
    assert raw.headers["x-molt-token-count"] == "estimate"


# -- native: an upstream that speaks Messages -------------------------------------------------

@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    with ServerThread(fake.app) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def native(molt_factory: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> Molt:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-test")
    return molt_factory(models=[{"alias": "claude-fake", "base_url": fake_anthropic.url + "/v1",  # type: ignore[attr-defined]
                                 "protocol": "anthropic", "api_key_env": "FAKE_ANTHROPIC_KEY"}])


def test_native_passes_the_body_and_bytes_through_and_records_chat(
        fake_anthropic: FakeAnthropic, native: Molt) -> None:
    fake_anthropic.push(Reply(content="Hi from Messages.", prompt_tokens=14, completion_tokens=4))
    body = {"model": "claude-fake", "max_tokens": 20, "messages": ASK,
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    r = httpx.post(native.url + "/v1/messages", json=body,
                   headers={"x-api-key": "x", "anthropic-version": "2023-06-01",
                            "anthropic-beta": "some-beta"})
    assert r.status_code == 200
    assert r.json() == fake_anthropic.message(body, Reply(content="Hi from Messages.", prompt_tokens=14,
                                                          completion_tokens=4))
    assert fake_anthropic.requests[-1] == body  # untranslated: thinking and all
    sent_headers = fake_anthropic.headers[-1]
    assert sent_headers["x-api-key"] == "sk-ant-test" and sent_headers["anthropic-beta"] == "some-beta"
    t = native.wait_turn(r.headers["x-molt-turn-id"])
    assert (t["status"], t["content"], t["input_tokens"], t["output_tokens"]) == ("ok", "Hi from Messages.", 14, 4)
    assert t["request"]["messages"] == ASK


def test_native_stream_bytes_unchanged_with_tool_use(fake_anthropic: FakeAnthropic, native: Molt) -> None:
    fake_anthropic.push(Reply(content="Let me look.", tool_calls=[("get_weather", {"city": "Oslo"})]))
    with httpx.stream("POST", native.url + "/v1/messages", headers={"x-api-key": "x"}, json={
            "model": "claude-fake", "max_tokens": 20, "stream": True, "messages": ASK,
            "tools": [WEATHER]}) as r:
        got = b"".join(r.iter_bytes())
        turn_id = r.headers["x-molt-turn-id"]
    assert got == fake_anthropic.stream_bytes[-1]
    t = native.wait_turn(turn_id)
    assert t["status"] == "ok" and t["finish_reason"] == "tool_calls" and t["content"] == "Let me look."
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in t["tool_calls"]] == [
        ("toolu_0", {"city": "Oslo"})]
    fake_anthropic.push(Reply(content="Sunny."))
    with _sdk(native).messages.stream(model="claude-fake", max_tokens=20, tools=[WEATHER], messages=[
            *ASK, {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, {
                "type": "tool_use", "id": "toolu_0", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_0",
                                          "content": "Sunny"}]}]) as s:
        assert s.get_final_message().content[0].text == "Sunny."  # type: ignore[union-attr]
        assert s.response.headers["x-molt-session-id"] == r.headers["x-molt-session-id"]


def test_native_gets_molts_skill_block_in_its_system(
        fake_anthropic: FakeAnthropic, molt_factory: Any, seeded: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    m = molt_factory(skills={"enabled": True, "seed_dir": str(seeded), "top_k": 2, "poll_interval_s": 0.2},
                     models=[{"alias": "claude-fake", "base_url": fake_anthropic.url + "/v1",  # type: ignore[attr-defined]
                              "protocol": "anthropic"}])
    _sdk(m).messages.create(model="claude-fake", max_tokens=20, system=SYSTEM["content"],
                            messages=[{"role": "user", "content": DATA}])
    system = fake_anthropic.requests[-1]["system"]
    assert system[0] == {"type": "text", "text": SYSTEM["content"]}
    assert system[1]["text"].startswith(SKILLS_OPEN) and "analyze-spreadsheet" in system[1]["text"]


def test_a_chat_request_for_a_native_route_is_refused_clearly(native: Molt) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai.OpenAI(base_url=native.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="claude-fake", messages=ASK)  # type: ignore[arg-type]
    assert "POST /v1/messages" in str(info.value)


# -- the local model: real tool use, and count_tokens with its tokenizer ----------------------

def test_local_model_tool_use_and_exact_token_count(molt_factory: Any, tiny_base: Path) -> None:
    m = start_local(molt_factory, tiny_base)
    client = _sdk(m)
    kw: dict[str, Any] = {"model": "tiny", "messages": TOOL_PROMPT, "tools": [WEATHER]}
    counted = client.messages.with_raw_response.count_tokens(**kw)
    msg = client.messages.create(max_tokens=200, extra_body={"temperature": 0}, **kw)
    [use] = msg.content
    assert (use.type, use.name, use.input, msg.stop_reason) == (  # type: ignore[union-attr]
        "tool_use", "get_weather", {"city": "Oslo"}, "tool_use")
    assert counted.headers["x-molt-token-count"] == "tokenizer"
    assert counted.parse().input_tokens == msg.usage.input_tokens  # what serving counted
    with client.messages.stream(max_tokens=200, extra_body={"temperature": 0}, **kw) as s:
        streamed = s.get_final_message()
    assert [(b.type, b.input) for b in streamed.content] == [("tool_use", {"city": "Oslo"})]  # type: ignore[union-attr]
    assert streamed.usage.input_tokens == msg.usage.input_tokens


def test_protocol_anthropic_needs_a_base_url() -> None:
    from molt.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="protocol = 'anthropic' needs base_url"):
        load_settings(None, {"models": [{"alias": "c", "litellm": "anthropic/claude-x",
                                         "protocol": "anthropic"}]})


def test_errors_raised_outside_the_route_are_in_anthropics_shape_too(molt: Molt) -> None:
    r = httpx.get(molt.url + "/v1/messages", headers={"x-api-key": "x"})
    assert r.status_code == 405
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    chat = httpx.get(molt.url + "/v1/chat/completions")
    assert chat.status_code == 405 and chat.json()["error"]["code"] == "method_not_allowed"


def test_rate_limits_answer_429_in_anthropics_shape(molt_factory: Any, tmp_path: Path) -> None:
    from tests.proxy.test_limits import _new_key

    m = molt_factory(server={"key_cache_ttl_s": 0})
    key, _ = _new_key(m, tmp_path, "--rpm", "1")
    client = _sdk(m, key=key)
    assert client.messages.create(model="gpt-fake", max_tokens=5, messages=ASK).content
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="gpt-fake", max_tokens=5, messages=ASK)
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert info.value.response.headers["retry-after"].isdigit()


def test_native_a_client_that_leaves_after_message_stop_got_the_whole_answer(
        fake_anthropic: FakeAnthropic, native: Molt) -> None:
    """The upstream keeps its connection open after `message_stop`; the client reads up to it
    and hangs up (as the SDK does): the turn is recorded as answered, not as a disconnect."""
    fake_anthropic.push(Reply(content="All of it.", linger_s=3.0))
    with httpx.stream("POST", native.url + "/v1/messages", headers={"x-api-key": "x"}, json={
            "model": "claude-fake", "max_tokens": 20, "stream": True, "messages": ASK}) as r:
        turn_id = r.headers["x-molt-turn-id"]
        seen = False
        for line in r.iter_lines():
            seen = seen or line.strip() == "event: message_stop"
            if seen and line.startswith("data:"):  # the stop event's data: the answer is whole
                break
    t = native.wait_turn(turn_id)
    assert t["status"] == "ok" and t["content"] == "All of it."
