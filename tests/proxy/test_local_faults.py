"""The local engine under failure: one request's failure stays its own, a dead engine says so,
and no request waits past its deadline. Real tiny model; failures injected by wrapping the
real runner (tests/proxy/local_faults.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.tiny_model import TEXT_ANSWER, TEXT_PROMPT, TOOL_PROMPT, WEATHER_TOOL
from tests.proxy.local_faults import Faulty, block_until, install, wait_until_queued
from tests.proxy.local_helpers import client, start_local

LONG_PROMPT = [{"role": "user", "content": "Tell a long story."}]
LONG_TOKENS = 60


class OddFailure(Exception):
    """Not a RuntimeError, ValueError or IndexError: nothing the engine expects."""


class EngineKiller(BaseException):
    """Not even an Exception: escapes the per-request handler and ends the engine thread."""


def _classify(prompt: str) -> str:
    for tag, marker in (("tool", "Weather in Oslo"), ("long", "long story"),
                        ("text", "Say hello")):
        if marker in prompt:
            return tag
    return "other"


def _raise(exc: BaseException) -> Any:
    def behave(step: int) -> None:
        raise exc
    return behave


def _open_long(m: Any) -> Any:
    """A long stream, started: its response began, so its prompt went through the engine."""
    return client(m).chat.completions.create(
        model="tiny", messages=LONG_PROMPT, temperature=0, max_tokens=LONG_TOKENS, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})


@pytest.mark.parametrize("failure", [OddFailure("a runner bug"),
                                     FutureWarning("a deprecation turned into an error")],
                         ids=["custom-exception", "warning-as-error"])
def test_a_failure_of_any_type_fails_only_its_own_request(
    molt_factory: Any, tiny_base: Path, failure: Exception
) -> None:
    m = start_local(molt_factory, tiny_base)
    faulty = install(m, _classify, {"tool": _raise(failure),
                                       "long": wait_until_queued(m)})
    c = client(m)
    long = _open_long(m)  # held in the engine until the failing request is queued beside it

    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.with_raw_response.create(model="tiny", messages=TOOL_PROMPT,
                                                    tools=[WEATHER_TOOL], temperature=0)
    assert err.value.status_code == 502
    body = err.value.response.json()["error"]
    assert body["code"] == "local_generation_failed"
    assert type(failure).__name__ in body["message"]
    assert set(body) == {"message", "type", "param", "code"}
    turn = m.wait_turn(err.value.response.headers["x-molt-turn-id"])
    assert turn["status"] == "upstream_error"

    # streamed, the same failure is an HTTP error too: the stream waits for its first token
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="tiny", messages=TOOL_PROMPT, tools=[WEATHER_TOOL],
                                  temperature=0, stream=True)
    assert err.value.status_code == 502

    # the long stream was running beside them the whole time, and finishes whole
    rest = list(long)
    assert [ch.choices[0].finish_reason for ch in rest if ch.choices
            and ch.choices[0].finish_reason] == ["length"]
    assert [ch.usage.completion_tokens for ch in rest if ch.usage] == [LONG_TOKENS]
    long_steps = [i for i, (t, _) in enumerate(faulty.steps) if t == "long"]
    tool_steps = [i for i, (t, _) in enumerate(faulty.steps) if t == "tool"]
    assert long_steps[0] < tool_steps[0] < long_steps[-1]

    # and the engine keeps serving
    r = c.chat.completions.create(model="tiny", messages=TEXT_PROMPT, temperature=0)
    assert r.choices[0].message.content == TEXT_ANSWER
    health = httpx.get(f"{m.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_a_dead_engine_fails_every_request_at_once_and_shows_in_healthz(
    molt_factory: Any, tiny_base: Path
) -> None:
    m = start_local(molt_factory, tiny_base)
    install(m, _classify, {"tool": _raise(EngineKiller()), "long": wait_until_queued(m)})
    c = client(m)
    long = _open_long(m)

    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="tiny", messages=TOOL_PROMPT, tools=[WEATHER_TOOL])
    assert err.value.status_code == 503
    assert err.value.code == "local_engine_dead"
    assert "EngineKiller" in err.value.message

    # the stream that was running ends with an error event, not a hang
    with pytest.raises(openai.APIError, match="engine stopped"):
        list(long)

    health = httpx.get(f"{m.url}/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "error"
    assert "EngineKiller" in health.json()["engines"]["tiny"]

    # a new request fails at once, in the envelope, and is recorded
    raw = httpx.post(f"{m.base_url}/chat/completions", timeout=30,
                     json={"model": "tiny", "messages": TEXT_PROMPT})
    assert raw.status_code == 503
    assert raw.json()["error"]["code"] == "local_engine_dead"
    assert m.wait_turn(raw.headers["x-molt-turn-id"])["status"] == "upstream_error"
    with pytest.raises(openai.APIStatusError):
        c.chat.completions.create(model="tiny", messages=TEXT_PROMPT, stream=True)


def test_a_request_past_its_deadline_fails_and_is_cancelled_in_the_engine(
    molt_factory: Any, tiny_base: Path
) -> None:
    m = molt_factory(models=[{"alias": "tiny", "local": str(tiny_base), "timeout_s": 3.0}],
                     skills={"enabled": False})
    release = threading.Event()
    faulty: Faulty = install(m, _classify, {"tool": block_until(release)})
    c = client(m)
    try:
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="tiny", messages=TOOL_PROMPT, tools=[WEATHER_TOOL])
    finally:
        release.set()
    assert err.value.status_code == 504
    assert err.value.code == "local_timeout"
    assert "timeout_s (3 s)" in err.value.message
    turn = m.wait_turn(err.value.response.headers["x-molt-turn-id"])
    assert turn["status"] == "upstream_error"

    # the engine goes on, and never steps the timed-out request again
    r = c.chat.completions.create(model="tiny", messages=TEXT_PROMPT, temperature=0)
    assert r.choices[0].message.content == TEXT_ANSWER
    assert faulty.tags("tool") == 1
