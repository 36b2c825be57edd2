"""Which session a turn lands in, seen from the store, with the openai SDK as the agent."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fake_llm import FakeLLM, Reply
from tests.store.conftest import _pg_reachable, _pg_url

SYSTEM = {"role": "system", "content": "You are an agent with a lookup tool."}
TASK = {"role": "user", "content": "Find the order status for the customer."}
TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look a record up.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


def _responder(body: dict[str, Any]) -> Reply:
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply(content="status: " + last["content"])
    if last["role"] == "user" and last["content"].startswith("thanks"):
        return Reply(content="you're welcome")
    return Reply(tool_calls=[("lookup", {"q": "order"})])


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The store two proxies share (two processes, as far as sessions can tell)."""
    if request.param == "sqlite":
        return {"url": f"sqlite+aiosqlite:///{tmp_path}/shared.db"}
    url = _pg_url()
    if not url:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    problem = _pg_reachable(url)
    if problem:
        pytest.skip(f"PostgreSQL skipped: cannot reach {url.split('@')[-1]}: {problem}")
    return {"url": url}


def _session(molt: Any, sid: str) -> Any:
    molt.flush()
    return molt.run(molt.state.trajectories.get_session(sid))


def test_parallel_runs_with_the_same_opening_stay_apart(fake_llm: FakeLLM, molt: Any) -> None:
    fake_llm.responder = _responder
    runs = 4
    step = threading.Barrier(runs)
    seen: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        client = openai.OpenAI(base_url=molt.base_url, api_key="x", max_retries=0)
        messages: list[Any] = [SYSTEM, TASK]
        sessions: list[str] = []

        def ask() -> Any:
            step.wait(timeout=30)  # every run sends turn k before any sends turn k + 1
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-fake", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
            sessions.append(raw.headers["x-molt-session-id"])
            return raw.parse().choices[0].message

        try:
            msg = ask()  # the same opening, the same answer for every run
            call = msg.tool_calls[0]
            messages += [msg.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": f"run {i} shipped"}]
            msg = ask()
            messages += [msg.model_dump(exclude_none=True), {"role": "user", "content": f"thanks {i}"}]
            ask()
            seen[i] = sessions
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
            step.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # Turn 0 is the same request with the same answer in every run: any run may take any
    # of those sessions. From turn 1 on each run has its own history and keeps its session.
    for sessions in seen.values():
        assert sessions[1] == sessions[2], sessions
    assert len({s[0] for s in seen.values()}) == runs
    assert {s[1] for s in seen.values()} == {s[0] for s in seen.values()}
    for i, sessions in seen.items():
        d = _session(molt, sessions[1])
        assert [t["idx"] for t in d.turns] == [0, 1, 2] and d.summary.turns == 3
        assert d.turns[0]["request"]["messages"] == [SYSTEM, TASK]
        assert d.turns[1]["request"]["messages"][-1]["content"] == f"run {i} shipped"
        assert d.turns[2]["request"]["messages"][-1]["content"] == f"thanks {i}"


def test_a_continuation_follows_the_answer_it_repeats(fake_llm: FakeLLM, molt: Any) -> None:
    """Two runs send the same first request and get different (streamed) answers; each
    continuation joins the run whose answer it carries, whichever comes first."""
    client = openai.OpenAI(base_url=molt.base_url, api_key="x", max_retries=0)
    opening = [SYSTEM, TASK]

    def ask(messages: list[Any]) -> tuple[str, str]:
        with client.chat.completions.with_streaming_response.create(
                model="gpt-fake", messages=messages, stream=True) as raw:
            sid = raw.headers["x-molt-session-id"]
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return sid, text

    fake_llm.push(Reply(content="answer A"), Reply(content="answer B"))
    sa, ra = ask(opening)
    sb, rb = ask(opening)
    assert (ra, rb) == ("answer A", "answer B") and sa != sb
    more = {"role": "user", "content": "go on"}
    assert ask([*opening, {"role": "assistant", "content": rb}, more])[0] == sb
    assert ask([*opening, {"role": "assistant", "content": ra}, more])[0] == sa
    # a third request repeating answer A again is a new run, not a third turn of A's
    third = ask([*opening, {"role": "assistant", "content": ra}, more])[0]
    assert third not in (sa, sb)
    assert _session(molt, sa).summary.turns == 2 and _session(molt, sb).summary.turns == 2


def test_continuation_after_a_restart_comes_from_the_store(
        fake_llm: FakeLLM, molt_factory: Any, store: dict[str, str]) -> None:
    first = molt_factory(store=store)
    client = openai.OpenAI(base_url=first.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-fake", messages=[TASK])
    sid, answer = raw.headers["x-molt-session-id"], raw.parse().choices[0].message.content
    first.flush()
    other = molt_factory(store=store)  # another process on the same store knows nothing in memory
    client = openai.OpenAI(base_url=other.base_url, api_key="x", max_retries=0)
    follow = [TASK, {"role": "assistant", "content": answer}, {"role": "user", "content": "and?"}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-fake", messages=follow)
    assert raw.headers["x-molt-session-id"] == sid
    other.flush()
    # an answer that is not the one recorded continues nothing
    edited = [TASK, {"role": "assistant", "content": "something else"}, {"role": "user", "content": "?"}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-fake", messages=edited)
    assert raw.headers["x-molt-session-id"] != sid


def _post(c: httpx.Client, sid: str, text: str, **headers: str) -> str:
    r = c.post("/chat/completions", headers={"X-Session-Id": sid, **headers},
               json={"model": "gpt-fake", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r.headers["x-molt-session-id"]


def test_session_done_then_the_same_id_opens_a_new_session(molt: Any) -> None:
    with httpx.Client(base_url=molt.base_url) as c:
        first = _post(c, "run-7", "one")
        assert _post(c, "run-7", "two", **{"X-Session-Done": "true"}) == first
        molt.flush()  # the closing turn is in the store too
        second = _post(c, "run-7", "again")
        assert second != first
        assert _post(c, "run-7", "more") == second
    old, new = _session(molt, first), _session(molt, second)
    assert old.summary.done and old.summary.turns == 2
    assert not new.summary.done and [t["idx"] for t in new.turns] == [0, 1]
    assert new.summary.external_id == "run-7"
    # the external id names the newest session
    assert molt.run(molt.state.trajectories.get_session("run-7")).summary.id == second


def test_session_done_is_seen_by_another_process(molt_factory: Any, store: dict[str, str]) -> None:
    a, b = molt_factory(store=store), molt_factory(store=store)  # two proxies on one store
    run = f"run-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=a.base_url) as c:
        first = _post(c, run, "one")
        assert _post(c, run, "bye", **{"X-Session-Done": "true"}) == first
    a.flush()
    with httpx.Client(base_url=b.base_url) as c:
        second = _post(c, run, "new run")
        assert second != first
        assert _post(c, run, "and on") == second
    new = _session(b, second)
    assert [t["idx"] for t in new.turns] == [0, 1] and not new.summary.done
    assert _session(b, first).summary.done
