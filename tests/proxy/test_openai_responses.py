"""The official openai SDK's `responses` API against molt's `POST /v1/responses`.

molt under a real uvicorn on loopback, the scripted fake upstream behind it
(an OpenAI chat server): what the SDK gets, what the upstream received, and
what molt recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from modeling.blocks import SKILLS_OPEN
from tests.conftest import Molt
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.proxy.test_skills_injection import TRAVEL, injected_names, seeded  # noqa: F401
from tests.proxy.test_tenancy import ADMIN_KEY, _key

TOOLS: list[Any] = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"]}}]
INSTRUCTIONS = "You are terse."


def _client(m: Molt, key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url=m.base_url, api_key=key, max_retries=0)


def _ask_weather(client: openai.OpenAI, **kw: Any) -> Any:
    return client.responses.with_raw_response.create(
        model="gpt-fake", instructions=INSTRUCTIONS, input="Weather in Oslo?", tools=TOOLS, **kw)


def _tool_result(call_id: str) -> list[Any]:
    return [{"type": "function_call_output", "call_id": call_id, "output": "12 C, sunny"}]


def _conversation(call_id: str) -> list[dict[str, Any]]:
    """What the upstream must see on the follow-up: the whole conversation, once."""
    return [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "12 C, sunny"}]


def test_text_answer_and_its_record(fake_llm: FakeLLM, molt: Molt) -> None:
    fake_llm.push(Reply(content="Hello there."))
    raw = _client(molt).responses.with_raw_response.create(
        model="gpt-fake", instructions=INSTRUCTIONS, input="Say hello", metadata={"run": "7"},
        max_output_tokens=50, temperature=0.5)
    r = raw.parse()
    assert r.object == "response" and r.status == "completed" and r.output_text == "Hello there."
    assert r.id == "resp_" + raw.headers["x-molt-turn-id"].removeprefix("turn_")
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (11, 7)
    assert r.metadata == {"run": "7"} and r.instructions == INSTRUCTIONS
    sent = fake_llm.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": INSTRUCTIONS},
                                {"role": "user", "content": "Say hello"}]
    assert (sent["max_completion_tokens"], sent["temperature"]) == (50, 0.5)
    assert "metadata" not in sent and "instructions" not in sent
    turn = molt.wait_turn(raw.headers["x-molt-turn-id"])
    # one trajectory format: the request and response are recorded in the chat form
    assert turn["request"]["messages"] == sent["messages"]
    assert turn["response"]["choices"][0]["message"]["content"] == "Hello there."
    assert (turn["content"], turn["status"], turn["followup_from"]) == ("Hello there.", "ok", 1)
    assert turn["session_id"] == raw.headers["x-molt-session-id"]


def test_function_call_then_previous_response_id(fake_llm: FakeLLM, molt: Molt) -> None:
    client = _client(molt)
    fake_llm.push(Reply(tool_calls=[("get_weather", {"city": "Oslo"})]), Reply(content="12 C."))
    first = _ask_weather(client)
    r1 = first.parse()
    call = r1.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"} and call.call_id == "call_0"
    # at once, before the recorder has written the first turn
    second = client.responses.with_raw_response.create(
        model="gpt-fake", instructions=INSTRUCTIONS, previous_response_id=r1.id,
        input=_tool_result(call.call_id), tools=TOOLS)
    r2 = second.parse()
    assert r2.output_text == "12 C." and r2.previous_response_id == r1.id
    assert fake_llm.requests[-1]["messages"] == _conversation("call_0")
    # one session: the follow-up extends the first turn and its answer
    assert second.headers["x-molt-session-id"] == first.headers["x-molt-session-id"]
    t2 = molt.wait_turn(second.headers["x-molt-turn-id"])
    assert t2["request"]["messages"] == _conversation("call_0") and t2["idx"] == 1


def test_a_follow_up_on_another_replica_reads_the_store(fake_llm: FakeLLM, molt_factory: Any) -> None:
    a = molt_factory()
    fake_llm.push(Reply(tool_calls=[("get_weather", {"city": "Oslo"})]), Reply(content="12 C."))
    r1 = _ask_weather(_client(a)).parse()
    a.flush()
    b = molt_factory()  # a second proxy on the same store: nothing in its memory
    r2 = _client(b).responses.create(model="gpt-fake", previous_response_id=r1.id,
                                     instructions=INSTRUCTIONS, input=_tool_result("call_0"))
    assert r2.output_text == "12 C."
    assert fake_llm.requests[-1]["messages"] == _conversation("call_0")


def test_streamed_function_call_and_streamed_follow_up(fake_llm: FakeLLM, molt: Molt) -> None:
    client = _client(molt)
    fake_llm.push(Reply(content="Let me check.", tool_calls=[("get_weather", {"city": "Oslo"})]),
                  Reply(content="It is 12 C and sunny."))
    events = list(client.responses.create(model="gpt-fake", instructions=INSTRUCTIONS,
                                          input="Weather in Oslo?", tools=TOOLS, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Let me check."
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Oslo"}
    final = events[-1].response  # type: ignore[union-attr]
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output_text == "Let me check." and final.usage.output_tokens == 7
    created = events[0].response  # type: ignore[union-attr]
    assert created.id == final.id and created.status == "in_progress"
    call_id = final.output[1].call_id
    # the follow-up streams through the SDK's helper, which checks the event sequence
    with client.responses.stream(model="gpt-fake", instructions=INSTRUCTIONS,
                                 previous_response_id=final.id, input=_tool_result(call_id),
                                 tools=TOOLS) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        done = stream.get_final_response()
    assert text == done.output_text == "It is 12 C and sunny."
    sent = fake_llm.requests[-1]["messages"]
    assert sent[2] == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": call_id, "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}
    assert sent[:2] + sent[3:] == [m for i, m in enumerate(_conversation(call_id)) if i != 2]
    turn = molt.wait_turn("turn_" + done.id.removeprefix("resp_"))
    assert turn["stream"] is True and turn["content"] == "It is 12 C and sunny."
    assert turn["response"]["object"] == "chat.completion"  # assembled like a chat stream


def test_unknown_previous_response_id_is_a_404_and_store_false_cannot_be_continued(
        fake_llm: FakeLLM, molt: Molt) -> None:
    client = _client(molt)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="gpt-fake", input="hi", previous_response_id="resp_nope")
    assert err.value.code == "previous_response_not_found"
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    unstored = client.responses.create(model="gpt-fake", input="hi", store=False)
    assert unstored.store is False
    molt.flush()
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-fake", input="again", previous_response_id=unstored.id)


def test_bad_requests_get_the_openai_envelope(molt: Molt) -> None:
    client = _client(molt)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-fake", input="hi", tools=[{"type": "web_search"}])
    assert err.value.body["param"] == "tools[0].type"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-fake", input=[{"type": "computer_call_output",
                                                         "call_id": "c", "output": {}}])
    assert err.value.body["param"] == "input[0].type"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="no-such-model", input="hi")


def test_the_upstream_failing_mid_stream_fails_the_response(fake_llm: FakeLLM, molt: Molt) -> None:
    fake_llm.push(Reply(content="one two three four five", cut_after=3))
    events = list(_client(molt).responses.create(model="gpt-fake", input="count", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]


def test_previous_response_id_stays_in_its_tenant(fake_llm: FakeLLM, molt_factory: Any,
                                                  tmp_path: Path) -> None:
    m = molt_factory(server={"admin_key": ADMIN_KEY})
    a, a2, b = (_key(m, tmp_path, "--tenant", t) for t in ("a", "a", "b"))
    fake_llm.push(Reply(tool_calls=[("get_weather", {"city": "Oslo"})]))
    r1 = _ask_weather(_client(m, a)).parse()
    n_upstream = len(fake_llm.requests)
    for flushed in (False, True):  # in this process's memory, then from the store
        if flushed:
            m.flush()
        with pytest.raises(openai.NotFoundError) as err:
            _client(m, b).responses.create(model="gpt-fake", previous_response_id=r1.id,
                                           input=_tool_result("call_0"))
        assert err.value.code == "previous_response_not_found"
        assert r1.id in err.value.message
    assert len(fake_llm.requests) == n_upstream  # refused before anything went upstream
    fake_llm.push(Reply(content="12 C."))
    r2 = _client(m, a2).responses.create(model="gpt-fake", previous_response_id=r1.id,
                                         instructions=INSTRUCTIONS, input=_tool_result("call_0"))
    assert r2.output_text == "12 C."  # another key of the same tenant continues it
    # a global admin acting for a tenant (X-Molt-Tenant) sees that tenant's responses only
    admin = openai.OpenAI(base_url=m.base_url, api_key=ADMIN_KEY, max_retries=0)
    fake_llm.push(Reply(content="Again 12 C."))
    r3 = admin.responses.create(model="gpt-fake", previous_response_id=r2.id, input="And now?",
                                extra_headers={"X-Molt-Tenant": "a"})
    assert r3.output_text == "Again 12 C."
    assert fake_llm.requests[-1]["messages"][-2:] == [
        {"role": "assistant", "content": "12 C."}, {"role": "user", "content": "And now?"}]
    with pytest.raises(openai.NotFoundError):
        admin.responses.create(model="gpt-fake", previous_response_id=r2.id, input="x",
                               extra_headers={"X-Molt-Tenant": "b"})


def test_skills_are_injected_and_the_record_keeps_the_agents_request(
        fake_llm: FakeLLM, molt_factory: Any, seeded: Path) -> None:  # noqa: F811
    m = molt_factory(skills={"enabled": True, "seed_dir": str(seeded), "top_k": 2,
                             "poll_interval_s": 0.2})
    raw = _client(m).responses.with_raw_response.create(
        model="gpt-fake", instructions="You are a helpful agent with tools.", input=TRAVEL)
    assert "book-travel" in injected_names(fake_llm)
    turn = m.wait_turn(raw.headers["x-molt-turn-id"])
    assert [s["id"] for s in turn["injected_skills"]] == injected_names(fake_llm)
    assert len(turn["request"]["messages"]) == 2 and len(turn["upstream_request"]["messages"]) == 3
    # a follow-up carries the agent's conversation, not the injected block
    fake_llm.push(Reply(content="Booked."))
    _client(m).responses.create(model="gpt-fake", previous_response_id=raw.parse().id,
                                input="Thanks, book it.")
    sent = fake_llm.requests[-1]["messages"]
    assert sum(1 for x in sent if str(x.get("content", "")).startswith(SKILLS_OPEN)) <= 1
    assert [x["role"] for x in sent if not str(x.get("content", "")).startswith(SKILLS_OPEN)] == [
        "user", "assistant", "user"]
