"""A real tiny causal LM served by molt itself, through the official openai SDK."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.tiny_model import TEXT_ANSWER, TEXT_PROMPT, TOOL_PROMPT, WEATHER_TOOL
from tests.proxy.local_faults import install, wait_until_queued
from tests.proxy.local_helpers import client, start_local
from tests.proxy.streams import rebuild


@pytest.fixture
def local(molt_factory: Any, tiny_base: Path) -> Any:
    return start_local(molt_factory, tiny_base)


def test_tool_call_parsed_non_streamed_and_streamed(local: Any) -> None:
    c = client(local)
    raw = c.chat.completions.with_raw_response.create(
        model="tiny", messages=TOOL_PROMPT, tools=[WEATHER_TOOL], temperature=0)
    r = raw.parse()
    assert raw.headers["x-molt-weight-version"] == "base"
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert call.id.startswith("call_")

    stream = c.chat.completions.create(
        model="tiny", messages=TOOL_PROMPT, tools=[WEATHER_TOOL], temperature=0, stream=True,
        stream_options={"include_usage": True})
    got = rebuild(list(stream))
    assert got["finishes"] == ["tool_calls"]
    assert got["text"] == ""
    assert [(v["name"], json.loads(v["arguments"])) for v in got["calls"].values()] == [
        ("get_weather", {"city": "Oslo"})]
    assert got["usage"][0].prompt_tokens == r.usage.prompt_tokens  # type: ignore[union-attr]
    assert got["usage"][0].completion_tokens == r.usage.completion_tokens  # type: ignore[union-attr]

    # without tools offered, the same text is not parsed
    plain = c.chat.completions.create(model="tiny", messages=TOOL_PROMPT, temperature=0)
    assert plain.choices[0].message.tool_calls is None


def test_text_streams_token_by_token(local: Any) -> None:
    c = client(local)
    whole = c.chat.completions.create(model="tiny", messages=TEXT_PROMPT, temperature=0)
    assert whole.choices[0].message.content == TEXT_ANSWER
    assert whole.choices[0].finish_reason == "stop"
    got = rebuild(list(c.chat.completions.create(
        model="tiny", messages=TEXT_PROMPT, temperature=0, stream=True)))
    assert got["text"] == TEXT_ANSWER
    assert got["finishes"] == ["stop"]
    assert got["usage"] == []
    # per decoded piece, not per word
    assert len(got["pieces"]) > len(TEXT_ANSWER.split())


def test_sampling_parameters(local: Any) -> None:
    c = client(local)
    short = c.chat.completions.create(model="tiny", messages=TEXT_PROMPT, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 3
    assert TEXT_ANSWER.startswith(short.choices[0].message.content or "-")

    stopped = c.chat.completions.create(model="tiny", messages=TEXT_PROMPT, temperature=0,
                                        stop=["friend"])
    assert stopped.choices[0].message.content == "Hello there, "
    assert stopped.choices[0].finish_reason == "stop"
    got = rebuild(list(c.chat.completions.create(
        model="tiny", messages=TEXT_PROMPT, temperature=0, stop=["friend"], stream=True)))
    assert got["text"] == "Hello there, "

    prompt = [{"role": "user", "content": "zebra quick"}]
    runs = [c.chat.completions.create(model="tiny", messages=prompt, temperature=1.5, seed=11,
                                      max_tokens=12).choices[0].message.content for _ in range(2)]
    assert runs[0] == runs[1]

    with pytest.raises(openai.BadRequestError, match="n=1"):
        c.chat.completions.create(model="tiny", messages=TEXT_PROMPT, n=2)
    with pytest.raises(openai.NotFoundError, match="v0009"):
        c.chat.completions.create(model="tiny@v9", messages=TEXT_PROMPT)


def test_turns_record_the_served_version(local: Any) -> None:
    c = client(local)
    raw = c.chat.completions.with_raw_response.create(model="tiny@base", messages=TEXT_PROMPT,
                                                      temperature=0)
    turn_id = raw.headers["x-molt-turn-id"]
    raw.parse()
    s = c.chat.completions.with_raw_response.create(
        model="tiny", messages=TOOL_PROMPT, tools=[WEATHER_TOOL], temperature=0, stream=True)
    stream_turn = s.headers["x-molt-turn-id"]
    list(s.parse())
    turn = local.wait_turn(turn_id)
    assert turn["weight_version"] == "base"
    assert turn["content"] == TEXT_ANSWER
    streamed = local.wait_turn(stream_turn)
    assert streamed["weight_version"] == "base"
    assert streamed["tool_calls"][0]["function"]["name"] == "get_weather"


def test_a_long_generation_does_not_starve_short_ones(local: Any) -> None:
    """Round-robin: a short request that arrives while a long one runs finishes first."""
    faulty = install(local, lambda prompt: "long" if "long story" in prompt else "short",
                     {"long": wait_until_queued(local)})
    c = client(local)
    # started: its prompt went through; the engine holds it at its 4th token until the
    # short request is queued beside it
    long = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Tell a long story."}],
        temperature=0, max_tokens=300, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True})
    assert c.chat.completions.create(model="tiny", messages=TEXT_PROMPT,
                                     temperature=0).choices[0].message.content == TEXT_ANSWER
    order = [tag for tag, _ in faulty.steps]
    assert "short" in order and order.count("long") < 300  # the short one is done, the long not
    assert [ch.usage.completion_tokens for ch in long if ch.usage] == [300]
    assert order.index("long") < order.index("short")


def test_async_clients_in_parallel(local: Any) -> None:
    async def run() -> list[str]:
        ac = openai.AsyncOpenAI(base_url=local.base_url, api_key="x", max_retries=0)
        out = await asyncio.gather(*(
            ac.chat.completions.create(model="tiny", messages=TEXT_PROMPT, temperature=0)
            for _ in range(6)))
        await ac.close()
        return [r.choices[0].message.content or "" for r in out]

    assert asyncio.run(run()) == [TEXT_ANSWER] * 6


def test_molts_own_blocks_never_make_a_request_too_long(local: Any) -> None:
    """Over the model's context because of molt's skills block: served without it, and said so."""
    from modeling.blocks import SKILLS_OPEN

    c = client(local)
    huge = SKILLS_OPEN + "\n" + "## padding\nA rule nobody needs. " * 200
    messages = [TOOL_PROMPT[0], {"role": "system", "content": huge}, *TOOL_PROMPT[1:]]
    raw = c.chat.completions.with_raw_response.create(
        model="tiny", messages=messages, tools=[WEATHER_TOOL], temperature=0)
    assert raw.headers["x-molt-blocks-dropped"] == "context_length"
    [call] = raw.parse().choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == {"city": "Oslo"}  # the answer without the block
    # the agent's own text over the context is still the agent's error, in OpenAI's shape
    own = [TOOL_PROMPT[0], {"role": "system", "content": "Context. " * 600}, *TOOL_PROMPT[1:]]
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="tiny", messages=own, tools=[WEATHER_TOOL])
    assert err.value.code == "context_length_exceeded"
