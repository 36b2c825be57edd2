"""The shared core (`proxy.turn_flow`) under a route of another protocol, and the typed replay.

The adapter here is the smallest other protocol there is (`{"text": ...}` in,
`{"reply": ...}` or `data: <piece>` events out): it shows what the Messages and
Responses routes do, and that a translated turn is recorded like a chat turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from proxy.app import create_app
from proxy.deps import get_state
from proxy.errors import ProxyError
from proxy.protocol import read_json, validate_chat
from proxy.sse_assembly import SSEEvents
from proxy.streaming import PassThroughStream
from proxy.turn_flow import CLIENT_CLOSED, ClientLeft, Completed, TurnInput, run_turn
from store.errors import NotFound
from tests.conftest import make_settings
from tests.fakes.fake_llm import FakeLLM, Reply
from tests.fakes.server import ServerThread


class PlainEncoder:
    """OpenAI chunks -> `data: <text piece>` events, `event: error` on a late failure."""

    def __init__(self) -> None:
        self.events = SSEEvents()

    def chunk(self, piece: bytes) -> bytes:
        out = b""
        for data in self.events.feed(piece):
            if data.strip() == "[DONE]":
                continue
            for choice in json.loads(data).get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    out += b"data: " + text.encode() + b"\n\n"
        return out

    def error(self, exc: ProxyError) -> bytes:
        return b"event: error\ndata: " + exc.message.encode() + b"\n\n"

    def end(self) -> bytes:
        return b"event: end\ndata: \n\n"


def plain_router() -> APIRouter:
    router = APIRouter()

    @router.post("/plain")
    async def plain(request: Request) -> Response:
        state = get_state(request)
        started = time.perf_counter()
        principal = await state.auth.authenticate(request.headers)
        raw = await read_json(request, state.settings.server.max_body_bytes)
        body = validate_chat({"model": raw["model"], "stream": bool(raw.get("stream")),
                              "messages": [{"role": "user", "content": raw["text"]}]})
        try:
            outcome = await run_turn(state, TurnInput(body, principal, request.headers,
                                                      request.receive, started))
        except ProxyError as exc:  # this protocol's error shape, with the turn's headers
            return JSONResponse({"failed": exc.message}, status_code=exc.status,
                                headers=exc.headers)
        if isinstance(outcome, Completed):
            reply = outcome.data["choices"][0]["message"]["content"]
            return JSONResponse({"reply": reply}, headers=outcome.headers)
        if isinstance(outcome, ClientLeft):
            return Response(status_code=CLIENT_CLOSED, headers=outcome.headers)
        return PassThroughStream(outcome, PlainEncoder())

    return router


@pytest.fixture
def plain(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Any]:
    settings = make_settings(tmp_path, fake_llm.url)  # type: ignore[attr-defined]
    app = create_app(settings, routers=[plain_router()])
    with ServerThread(app) as srv:
        yield srv, app


def _turn(srv: ServerThread, app: Any, turn_id: str) -> dict[str, Any]:
    state = app.state.molt
    deadline = time.monotonic() + 10
    while True:
        srv.call(state.recorder.flush())
        try:
            return srv.call(state.trajectories.get_turn(turn_id))  # type: ignore[no-any-return]
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_translating_route_answers_in_its_protocol_and_records_chat(
        fake_llm: FakeLLM, plain: Any) -> None:
    srv, app = plain
    fake_llm.push(Reply(content="Hello there."))
    r = httpx.post(srv.url + "/plain", json={"model": "gpt-fake", "text": "hi"},
                   headers={"Authorization": "Bearer x"})
    assert r.status_code == 200 and r.json() == {"reply": "Hello there."}
    t = _turn(srv, app, r.headers["x-molt-turn-id"])
    assert t["session_id"] == r.headers["x-molt-session-id"]
    assert t["request"]["messages"] == [{"role": "user", "content": "hi"}]
    assert (t["content"], t["status"], t["stream"]) == ("Hello there.", "ok", False)

    fake_llm.push(Reply(content="One two three."))
    with httpx.stream("POST", srv.url + "/plain", headers={"Authorization": "Bearer x"},
                      json={"model": "gpt-fake", "text": "count", "stream": True}) as s:
        text = s.read().decode()
        turn_id = s.headers["x-molt-turn-id"]
    pieces = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert "".join(pieces) == "One two three." and text.endswith("event: end\ndata: \n\n")
    t = _turn(srv, app, turn_id)  # the upstream's chat chunks, assembled: the chat format
    assert (t["content"], t["status"], t["stream"]) == ("One two three.", "ok", True)
    assert t["response"]["choices"][0]["message"]["content"] == "One two three."


def test_a_translating_route_gets_failures_recorded_and_with_the_turns_headers(
        fake_llm: FakeLLM, plain: Any) -> None:
    srv, app = plain
    fake_llm.push(Reply(status=500))
    r = httpx.post(srv.url + "/plain", json={"model": "gpt-fake", "text": "hi"},
                   headers={"Authorization": "Bearer x"})
    assert r.status_code == 502 and "HTTP 500" in r.json()["failed"]
    t = _turn(srv, app, r.headers["x-molt-turn-id"])
    assert (t["status"], t["http_status"]) == ("upstream_error", 502)

    fake_llm.push(Reply(content="a b c d e f", cut_after=2))  # the upstream cuts the stream
    with httpx.stream("POST", srv.url + "/plain", headers={"Authorization": "Bearer x"},
                      json={"model": "gpt-fake", "text": "go", "stream": True}) as s:
        text = s.read().decode()
        turn_id = s.headers["x-molt-turn-id"]
    assert "event: error" in text and "event: end" not in text
    assert _turn(srv, app, turn_id)["status"] == "upstream_error"


def test_a_replay_is_parsed_once_and_fails_the_same_way_in_both_hooks(
        fake_llm: FakeLLM, molt_factory: Any) -> None:
    m = molt_factory()
    url, auth = m.base_url + "/chat/completions", {"Authorization": "Bearer x"}
    body = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]}

    bad = httpx.post(url, json=body, headers={**auth, "X-Molt-Replay": "not an id!"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-molt-replay"
    bad = httpx.post(url, json=body, headers={**auth, "X-Molt-Replay": "current",
                                              "X-Molt-Context": "a/b"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-molt-context"
    # a context version that does not exist: the replay fails (it used to run without one)
    missing = httpx.post(url, json=body, headers={**auth, "X-Molt-Replay": "current",
                                                  "X-Molt-Context": "ctx_missing"})
    err = missing.json()["error"]
    assert missing.status_code == 404 and err["param"] == "x-molt-context"
    assert "ctx_missing" in err["message"]
    assert not fake_llm.requests  # nothing went upstream

    ok = httpx.post(url, json=body, headers={**auth, "X-Molt-Replay": "current",
                                             "X-Molt-Context": "none"})
    assert ok.status_code == 200
    t = m.wait_turn(ok.headers["x-molt-turn-id"])
    assert (t["turn_type"], t["context_version"]) == ("replay", None)
    # an agent's turn never carries the replay headers' meaning
    agent = httpx.post(url, json=body, headers={**auth, "X-Molt-Context": "ctx_missing"})
    assert agent.status_code == 200
    assert m.wait_turn(agent.headers["x-molt-turn-id"])["turn_type"] == "main"
