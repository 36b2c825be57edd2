"""Bad input and failing upstreams: the right OpenAI error, and nothing recorded is lost."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fake_llm import FakeLLM, Reply

OK = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]}


def _assert_envelope(r: httpx.Response, status: int, etype: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if etype:
        assert err["type"] == etype
    return err


@pytest.fixture
def recorded(fake_llm: FakeLLM, molt: Any) -> Any:
    """One good turn recorded before the bad input."""
    with httpx.Client(base_url=molt.base_url) as c:
        r = c.post("/chat/completions", json=OK)
        assert r.status_code == 200
    return r.headers["x-molt-turn-id"]


def _still_there(molt: Any, turn_id: str) -> None:
    molt.flush()
    assert molt.run(molt.state.trajectories.get_turn(turn_id))["status"] == "ok"


def test_malformed_and_invalid_requests(molt: Any, recorded: str) -> None:
    with httpx.Client(base_url=molt.base_url) as c:
        _assert_envelope(c.post("/chat/completions", content=b"{not json",
                                headers={"content-type": "application/json"}), 400, "invalid_request_error")
        e = _assert_envelope(c.post("/chat/completions", json={"model": "gpt-fake", "messages": "hi"}), 400)
        assert e["param"] == "messages"
        e = _assert_envelope(c.post("/chat/completions", json={**OK, "temperature": "hot"}), 400)
        assert e["param"] == "temperature"
        e = _assert_envelope(c.post("/chat/completions", json={**OK, "stream": "yes"}), 400)
        assert e["param"] == "stream"
        e = _assert_envelope(c.post("/chat/completions", json={"messages": OK["messages"]}), 400)
        assert e["param"] == "model"
        e = _assert_envelope(c.post("/chat/completions", json={**OK, "messages": [{"role": "wizard", "content": "x"}]}), 400)
        assert e["param"] == "messages[0].role"
        e = _assert_envelope(c.post("/chat/completions", json={**OK, "model": "nope"}), 404)
        assert e["code"] == "model_not_found" and e["param"] == "model"
        _assert_envelope(c.get("/nothing-here"), 404)
    _still_there(molt, recorded)


def test_unknown_model_through_sdk(molt: Any) -> None:
    client = openai.OpenAI(base_url=molt.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=OK["messages"])
    assert "gpt-nope" in str(info.value)


def test_oversized_body(molt_factory: Any) -> None:
    m = molt_factory(server={"max_body_bytes": 2000})
    with httpx.Client(base_url=m.base_url) as c:
        big = {**OK, "messages": [{"role": "user", "content": "x" * 5000}]}
        e = _assert_envelope(c.post("/chat/completions", json=big), 413)
        assert e["code"] == "request_too_large"


def test_upstream_500_and_timeout(fake_llm: FakeLLM, molt_factory: Any) -> None:
    m = molt_factory(models=[{"alias": "gpt-fake", "base_url": fake_llm.url + "/v1", "timeout_s": 0.5}])  # type: ignore[attr-defined]
    with httpx.Client(base_url=m.base_url, timeout=10) as c:
        good = c.post("/chat/completions", json=OK).headers["x-molt-turn-id"]
        fake_llm.push(Reply(status=500, error="boom"))
        r = c.post("/chat/completions", json=OK)
        e = _assert_envelope(r, 502, "upstream_error")
        assert "boom" in e["message"]
        failed_turn = r.headers["x-molt-turn-id"]
        fake_llm.push(Reply(status=429, error="slow down"))
        _assert_envelope(c.post("/chat/completions", json=OK), 429, "rate_limit_error")
        fake_llm.push(Reply(delay_s=2.0, content="late"))
        e = _assert_envelope(c.post("/chat/completions", json=OK), 504, "timeout")
    _still_there(m, good)
    t = m.run(m.state.trajectories.get_turn(failed_turn))
    assert t["status"] == "upstream_error" and t["http_status"] == 502


def test_upstream_unreachable(molt_factory: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = molt_factory(models=[{"alias": "gpt-fake", "base_url": f"http://127.0.0.1:{port}/v1"}])
    with httpx.Client(base_url=m.base_url) as c:
        e = _assert_envelope(c.post("/chat/completions", json=OK), 502, "upstream_error")
    assert e["code"] == "upstream_unreachable"


def test_upstream_closes_mid_stream(fake_llm: FakeLLM, molt: Any, recorded: str) -> None:
    fake_llm.push(Reply(content="a b c d e f", cut_after=3))
    with httpx.Client(base_url=molt.base_url) as c, \
            c.stream("POST", "/chat/completions", json={**OK, "stream": True}) as r:
        assert r.status_code == 200
        body = b"".join(r.iter_bytes()).decode()
        turn = r.headers["x-molt-turn-id"]
    events = [e for e in body.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2] and "upstream_stream_closed" in events[-2]
    _still_there(molt, recorded)
    t = molt.wait_turn(turn)
    assert t["status"] == "upstream_error" and t["content"] == "a b"


def test_a_client_that_leaves_after_done_got_the_whole_answer(
        fake_llm: FakeLLM, molt: Any, recorded: str) -> None:
    """The upstream keeps its connection open after `[DONE]`; the client reads up to `[DONE]`
    and hangs up (as SDKs do): the turn is recorded as answered, not as a disconnect."""
    fake_llm.push(Reply(content="all of it", linger_s=3.0))
    with httpx.Client(base_url=molt.base_url) as c, \
            c.stream("POST", "/chat/completions", json={**OK, "stream": True}) as r:
        turn = r.headers["x-molt-turn-id"]
        for line in r.iter_lines():
            if line.strip() == "data: [DONE]":
                break
    t = molt.wait_turn(turn)
    assert t["status"] == "ok" and t["content"] == "all of it"
    _still_there(molt, recorded)


def test_client_disconnect_mid_stream(fake_llm: FakeLLM, molt: Any, recorded: str) -> None:
    fake_llm.push(Reply(content=" ".join(f"w{i}" for i in range(200)), chunk_delay_s=0.02))
    with httpx.Client(base_url=molt.base_url) as c, \
            c.stream("POST", "/chat/completions", json={**OK, "stream": True}) as r:
        turn = r.headers["x-molt-turn-id"]
        it = r.iter_bytes()
        next(it)
        next(it)
    # the upstream request is closed too
    assert fake_llm.wait_until(lambda: fake_llm.disconnects == 1)
    t = molt.wait_turn(turn)
    assert t["status"] == "client_disconnected"
    assert t["content"].startswith("w0")
    _still_there(molt, recorded)


@pytest.mark.parametrize("raw", [b'{"id": "chatcmpl-1", "choices": [', b"<html>502 Bad Gateway</html>",
                                 b"", b'["not", "a", "completion"]'])
def test_upstream_200_with_an_invalid_body_is_a_502(fake_llm: FakeLLM, molt: Any, recorded: str,
                                                    raw: bytes) -> None:
    fake_llm.push(Reply(raw_body=raw))
    with httpx.Client(base_url=molt.base_url) as c:
        r = c.post("/chat/completions", json=OK)
    e = _assert_envelope(r, 502, "upstream_error")
    assert e["code"] == "upstream_invalid_response"
    t = molt.wait_turn(r.headers["x-molt-turn-id"])
    assert t["status"] == "upstream_error" and t["http_status"] == 502
    assert t["error"]["code"] == "upstream_invalid_response"
    _still_there(molt, recorded)


def test_valid_upstream_body_passes_through_byte_for_byte(fake_llm: FakeLLM, molt: Any) -> None:
    completion = FakeLLM().completion({"model": "gpt-fake"}, Reply(content="exact"))
    raw = json.dumps(completion, indent=3).encode() + b"\n"  # odd spacing a re-dump would lose
    fake_llm.push(Reply(raw_body=raw))
    with httpx.Client(base_url=molt.base_url) as c:
        r = c.post("/chat/completions", json=OK)
    assert r.status_code == 200 and r.content == raw
    t = molt.wait_turn(r.headers["x-molt-turn-id"])
    assert t["status"] == "ok" and t["content"] == "exact" and t["input_tokens"] == 11


def _post_then_leave(molt: Any, fake_llm: FakeLLM, body: dict[str, Any]) -> None:
    """Send a request on a raw socket, wait until molt has called the upstream, then hang up."""
    payload = json.dumps(body).encode()
    host, port = molt.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: molt\r\n"
                  b"content-type: application/json\r\ncontent-length: "
                  + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        assert fake_llm.wait_until(lambda: len(fake_llm.requests) == 1)


def _only_turn(molt: Any) -> dict[str, Any]:
    # molt submits the turn in the same step as it cancels the upstream call, so before
    # the upstream sees its connection close: one flush writes it.
    molt.flush()
    turns = molt.run(molt.state.trajectories.turns_since(0))
    assert len(turns) == 1
    return turns[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_before_the_first_byte_cancels_the_upstream(
        fake_llm: FakeLLM, molt_factory: Any, stream: bool) -> None:
    m = molt_factory(models=[{"alias": "gpt-fake", "base_url": fake_llm.url + "/v1",  # type: ignore[attr-defined]
                              "timeout_s": 600}])
    fake_llm.push(Reply(content="far too late", delay_s=300))
    _post_then_leave(m, fake_llm, {**OK, "stream": stream})
    # The fake saw its request closed while it was still delaying the first byte.
    assert fake_llm.wait_until(lambda: fake_llm.abandoned == 1)
    t = _only_turn(m)
    assert t["status"] == "client_disconnected" and t["http_status"] == 499
    assert t["content"] is None
    # and molt goes on serving
    with httpx.Client(base_url=m.base_url) as c:
        assert c.post("/chat/completions", json={**OK, "stream": stream}).status_code == 200
