"""Odd client input at the request edge: a 400 in the OpenAI envelope, never a 500.

Each case was a 500 (or was let through to fail later in the recorder or the
upstream call) before the edge checked it. Nothing recorded earlier is lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fake_llm import FakeLLM

OK = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]}
USER = OK["messages"]


def _envelope(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and err["type"] == "invalid_request_error"
    return err  # type: ignore[no-any-return]


def _raw(c: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return c.post("/chat/completions", content=body,
                  headers={"content-type": "application/json", **headers})


def _assistant(tool_calls: Any) -> dict[str, Any]:
    return {**OK, "messages": [*USER, {"role": "assistant", "content": None,
                                       "tool_calls": tool_calls}]}


# (body, the param the error names)
BAD_SHAPES: list[tuple[Any, str]] = [
    ({**OK, "functions": 5}, "functions"),
    ({**OK, "functions": ["lookup"]}, "functions[0]"),
    ({**OK, "functions": [{"description": "no name"}]}, "functions[0]"),
    (_assistant([{"function": "str"}]), "messages[1].tool_calls[0].function"),
    (_assistant(7), "messages[1].tool_calls"),
    (_assistant(["call"]), "messages[1].tool_calls[0]"),
    (_assistant([{"function": {"arguments": "{}"}}]), "messages[1].tool_calls[0].function.name"),
    (_assistant([{"function": {"name": "f", "arguments": 5}}]),
     "messages[1].tool_calls[0].function.arguments"),
    (_assistant([{"id": 3, "function": {"name": "f", "arguments": "{}"}}]),
     "messages[1].tool_calls[0].id"),
    ({**OK, "messages": {"role": "user", "content": "hi"}}, "messages"),
    ({**OK, "messages": []}, "messages"),
    ({**OK, "messages": ["hi"]}, "messages[0]"),
    ({**OK, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({**OK, "messages": [{"role": "user", "content": {"text": "hi"}}]}, "messages[0].content"),
    ({**OK, "messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
    ({**OK, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
     "messages[0].content[0]"),
    ({**OK, "messages": [{"role": "tool", "content": "x", "tool_call_id": 9}]},
     "messages[0].tool_call_id"),
    ({**OK, "messages": [{"role": "user", "content": "x", "name": ["a"]}]}, "messages[0].name"),
    ({**OK, "messages": [{"role": 1, "content": "x"}]}, "messages[0].role"),
    ({**OK, "tools": 5}, "tools"),
    ({**OK, "tools": ["lookup"]}, "tools[0]"),
    ({**OK, "tools": [{"type": "function", "function": "lookup"}]}, "tools[0]"),
    ({**OK, "tools": [{"type": "function", "function": {"name": "f", "description": 3}}]},
     "tools[0].function.description"),
    ({**OK, "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "tools[0].function.parameters"),
    ({**OK, "tool_choice": 3}, "tool_choice"),
    ({**OK, "stop": 3}, "stop"),
    ({**OK, "stop": ["a", 1]}, "stop"),
    ({**OK, "max_tokens": 2**70}, "max_tokens"),
    ({**OK, "max_tokens": 1.5}, "max_tokens"),
    ({**OK, "temperature": True}, "temperature"),
    ({**OK, "stream_options": "usage"}, "stream_options"),
    ({**OK, "model": ""}, "model"),
    ({**OK, "model": 5}, "model"),
    ({**OK, "model": "gpt-fake@" + "v" * 300}, "model"),
]


@pytest.mark.parametrize(("body", "param"), BAD_SHAPES,
                         ids=[p + ":" + json.dumps(b)[-40:] for b, p in BAD_SHAPES])
def test_bad_shapes_are_400_naming_the_param(molt: Any, body: Any, param: str) -> None:
    with httpx.Client(base_url=molt.base_url) as c:
        err = _envelope(c.post("/chat/completions", json=body))
        assert err["param"] == param
        assert c.post("/chat/completions", json=OK).status_code == 200


HEAD = b'{"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}], '


def _user(content: bytes) -> bytes:
    return b'{"model": "gpt-fake", "messages": [{"role": "user", "content": "' + content + b'"}]}'


NOT_JSON: list[tuple[bytes, str]] = [
    (HEAD + b'"temperature": NaN}', "NaN"),
    (HEAD + b'"temperature": Infinity}', "Infinity"),
    (HEAD + b'"metadata": {"x": -Infinity}}', "-Infinity"),
    (HEAD + b'"temperature": 1e999}', "out of range"),
    (HEAD + b'"seed": ' + b"9" * 5000 + b"}", "digits"),
    # a lone surrogate, as an escape (high, low, in a key) and as (invalid) UTF-8 bytes
    (_user(b"a \\ud800 b"), "surrogate"),
    (_user(b"tail \\udc00"), "surrogate"),
    (HEAD + b'"metadata": {"\\ud83d": 1}}', "surrogate"),
    (_user(b"a \xed\xa0\x80 b"), "UTF-8"),
    (_user(b"\xff"), "UTF-8"),
]


@pytest.mark.parametrize(("raw", "why"), NOT_JSON, ids=[w for _, w in NOT_JSON])
def test_not_json_is_refused(molt: Any, raw: bytes, why: str) -> None:
    with httpx.Client(base_url=molt.base_url) as c:
        err = _envelope(_raw(c, raw))
        assert "not valid JSON" in err["message"] and why in err["message"]


def test_deep_nesting_is_refused_with_a_clear_message(molt: Any) -> None:
    head = HEAD + b'"metadata": '
    with httpx.Client(base_url=molt.base_url) as c:
        for depth in (100, 100_000):  # over the cap; and past Python's recursion limit
            err = _envelope(_raw(c, head + b"[" * depth + b"]" * depth + b"}"))
            assert "nested more than 64 levels" in err["message"]
        ok = _raw(c, head + b"[" * 40 + b"]" * 40 + b"}")
        assert ok.status_code == 200, ok.text


def test_valid_unicode_is_served_as_sent(fake_llm: FakeLLM, molt: Any) -> None:
    # A surrogate pair (an emoji) and a literal backslash-u text are valid JSON strings.
    raw = (b'{"model": "gpt-fake", "messages": [{"role": "user", '
           b'"content": "smile \\ud83d\\ude00 and \\\\ud800 as text"}]}')
    with httpx.Client(base_url=molt.base_url) as c:
        r = _raw(c, b"\xef\xbb\xbf" + raw)  # with a UTF-8 byte order mark too
    assert r.status_code == 200, r.text
    assert fake_llm.requests[-1]["messages"][0]["content"] == "smile \U0001f600 and \\ud800 as text"
    t = molt.wait_turn(r.headers["x-molt-turn-id"])
    assert t["status"] == "ok"


def test_session_headers_and_model_are_capped(molt: Any) -> None:
    with httpx.Client(base_url=molt.base_url) as c:
        err = _envelope(c.post("/chat/completions", json=OK, headers={"X-Session-Id": "s" * 257}))
        assert err["param"] == "X-Session-Id" and "256" in err["message"]
        err = _envelope(c.post("/chat/completions", json=OK, headers={"X-Turn-Type": "x" * 40}))
        assert err["param"] == "X-Turn-Type"
        err = _envelope(c.post("/chat/completions", json={**OK, "model": "m" * 300}))
        assert err["param"] == "model"
        r = c.post("/chat/completions", json=OK, headers={"X-Session-Id": "s" * 256})
        assert r.status_code == 200
    t = molt.wait_turn(r.headers["x-molt-turn-id"])
    assert t["status"] == "ok"


def test_sdk_sees_a_bad_request_error(molt: Any) -> None:
    client = openai.OpenAI(base_url=molt.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-fake", messages=USER,
                                       extra_body={"functions": 5})
    assert info.value.status_code == 400
    assert "functions" in str(info.value)


def test_lone_surrogate_with_skills_on(molt_factory: Any, tmp_path: Path) -> None:
    seed = tmp_path / "seed" / "book-travel"
    seed.mkdir(parents=True)
    (seed / "SKILL.md").write_text(
        "---\nname: book-travel\ndescription: Use when booking flights or hotels.\n---\n\n"
        "1. Compare fares.\n")
    m = molt_factory(skills={"enabled": True, "seed_dir": str(tmp_path / "seed")})
    with httpx.Client(base_url=m.base_url, timeout=60) as c:
        err = _envelope(_raw(c, b'{"model": "gpt-fake", "messages": [{"role": "user", '
                                b'"content": "book a flight \\ud83d"}]}'))
        assert "surrogate" in err["message"]
        r = c.post("/chat/completions", json={**OK, "messages": [
            {"role": "user", "content": "book a flight \U0001f600"}]})
        assert r.status_code == 200, r.text
