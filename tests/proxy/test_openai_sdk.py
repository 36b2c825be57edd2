"""The official openai SDK through molt equals the SDK straight to the upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.fakes.fake_llm import FakeLLM, Reply
from tests.proxy.streams import rebuild

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time",
     "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Oslo and time in Tokyo?"}]


def _clients(fake: FakeLLM, base_url: str) -> tuple[openai.OpenAI, openai.OpenAI]:
    direct = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)  # type: ignore[attr-defined]
    proxied = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    return direct, proxied


def test_non_streamed_equals_direct(fake_llm: FakeLLM, molt: Any) -> None:
    direct, proxied = _clients(fake_llm, molt.base_url)
    reply = Reply(content="Sunny, 12 degrees.")
    fake_llm.push(reply, reply)
    a = direct.chat.completions.create(model="gpt-fake", messages=MESSAGES)
    raw = proxied.chat.completions.with_raw_response.create(model="gpt-fake", messages=MESSAGES)
    b = raw.parse()
    assert a.model_dump() == b.model_dump()
    assert raw.headers["x-molt-turn-id"].startswith("turn_")
    assert raw.headers["x-molt-session-id"].startswith("ses_")


def _rebuild(stream: Any) -> tuple[list[Any], dict[str, Any]]:
    chunks = list(stream)
    out = rebuild(chunks)
    out["usage"] = [u.model_dump() for u in out["usage"]]
    return chunks, out


@pytest.mark.parametrize("include_usage", [False, True])
def test_streamed_parallel_tool_calls_equal_direct(fake_llm: FakeLLM, molt: Any, include_usage: bool) -> None:
    direct, proxied = _clients(fake_llm, molt.base_url)
    reply = Reply(tool_calls=[("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "Asia/Tokyo"})])
    fake_llm.push(reply, reply)
    kw: dict[str, Any] = {"model": "gpt-fake", "messages": MESSAGES, "tools": TOOLS, "stream": True}
    if include_usage:
        kw["stream_options"] = {"include_usage": True}
    a_chunks, a = _rebuild(direct.chat.completions.create(**kw))
    b_chunks, b = _rebuild(proxied.chat.completions.create(**kw))
    assert [c.model_dump() for c in a_chunks] == [c.model_dump() for c in b_chunks]
    assert a == b
    assert b["finishes"] == ["tool_calls"]
    assert json.loads(b["calls"][1]["arguments"]) == {"tz": "Asia/Tokyo"}
    assert bool(b["usage"]) is include_usage
    # what went upstream kept the client's fields
    assert fake_llm.requests[-1]["tools"] == TOOLS
    assert fake_llm.requests[-1].get("stream_options") == kw.get("stream_options")


def test_streamed_text_and_unknown_fields_forwarded(fake_llm: FakeLLM, molt: Any) -> None:
    _, proxied = _clients(fake_llm, molt.base_url)
    fake_llm.push(Reply(content="one two three four"))
    stream = proxied.chat.completions.create(
        model="gpt-fake", messages=MESSAGES, stream=True,
        extra_body={"vendor_knob": {"x": 1}, "top_k": 3},
    )
    _, got = _rebuild(stream)
    assert got["text"] == "one two three four"
    assert got["finishes"] == ["stop"]
    assert fake_llm.requests[-1]["vendor_knob"] == {"x": 1}
    assert fake_llm.requests[-1]["top_k"] == 3


def test_async_client(fake_llm: FakeLLM, molt: Any) -> None:
    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=molt.base_url, api_key="x", max_retries=0)
        async def one(i: int) -> str:
            r = await client.chat.completions.create(
                model="gpt-fake", messages=[{"role": "user", "content": f"hello {i}"}])
            return r.choices[0].message.content or ""
        out = await asyncio.gather(*(one(i) for i in range(8)))
        await client.close()
        return list(out)

    assert asyncio.run(run()) == [f"echo: hello {i}" for i in range(8)]


def test_models_lists_aliases(molt: Any) -> None:
    client = openai.OpenAI(base_url=molt.base_url, api_key="x")
    assert [m.id for m in client.models.list()] == ["gpt-fake"]


def test_litellm_client_through_proxy(fake_llm: FakeLLM, molt: Any) -> None:
    import litellm

    fake_llm.push(Reply(content="via litellm"))
    r = litellm.completion(model="openai/gpt-fake", api_base=molt.base_url, api_key="x",
                           messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "via litellm"
    fake_llm.push(Reply(content="streamed via litellm"))
    chunks = litellm.completion(model="openai/gpt-fake", api_base=molt.base_url, api_key="x",
                                messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "streamed via litellm"


def test_litellm_route_upstream(fake_llm: FakeLLM, molt_factory: Any) -> None:
    """An alias mapped to a litellm model string goes through litellm's Router."""
    m = molt_factory(models=[{"alias": "routed", "litellm": "openai/some-model", "num_retries": 0}])
    import os
    os.environ["OPENAI_API_BASE"] = fake_llm.url + "/v1"  # type: ignore[attr-defined]
    os.environ.setdefault("OPENAI_API_KEY", "x")
    try:
        client = openai.OpenAI(base_url=m.base_url, api_key="x", max_retries=0)
        fake_llm.push(Reply(content="from router"), Reply(content="streamed router"))
        r = client.chat.completions.create(model="routed", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "from router"
        s = client.chat.completions.create(model="routed", messages=[{"role": "user", "content": "hi"}], stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == "streamed router"
        assert fake_llm.requests[-1]["model"] == "some-model"
    finally:
        del os.environ["OPENAI_API_BASE"]
