"""The evolver loop's triggers through real molt: its clock, feedback after a session, serving at once.

The serving model is the scripted convention follower (tests/fakes/convention_agent.py);
the loop's background poll is set far apart, so only the ticks a test asks for
(`POST /admin/evolver/tick`) run, on a clock the test moves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.agent import AgentDriver
from molt.config import load_settings
from molt.embedded import ServerThread, free_port
from molt.wiring import build_app
from tests.fakes.convention_agent import ConventionFollower
from tests.fakes.fake_llm import FakeLLM

DAY, SEED = 4, 11  # day 4: dates drift to DD.MM.YYYY


class Clock:
    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped


@pytest.fixture
def follower() -> Iterator[tuple[FakeLLM, ConventionFollower]]:
    fake = FakeLLM()
    agent = ConventionFollower(DAY, 80, SEED, marker="DD.MM.YYYY")
    fake.responder = agent
    with ServerThread(fake.app) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake, agent


def _start(tmp_path: Path, agent_url: str, clock: Clock, **evolver: Any) -> ServerThread:
    port = free_port()
    settings = load_settings(None, {
        "server": {"port": port},
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/molt.db"},
        "models": [{"alias": "agent", "base_url": agent_url + "/v1", "timeout_s": 30}],
        # the skills watcher polls rarely: what the loop accepts must be served at once anyway
        "skills": {"enabled": True, "seed_dir": None, "poll_interval_s": 3600},
        "evolver": {"enabled": True, "min_support": 2, "optimize_context": False, "poll_s": 3600,
                    **evolver},
    })
    return ServerThread(build_app(settings, evolver_clock=clock), port=port).__enter__()


def _play(srv: ServerThread, tasks: list[Any], *, feedback: bool = True) -> list[Any]:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    driver = AgentDriver(client, "agent", system_prompt="You are a helpful assistant with tools.",
                         feedback=feedback)
    try:
        return [driver.run(t) for t in tasks]
    finally:
        driver.close()


def _tick(srv: ServerThread) -> list[dict[str, Any]]:
    r = httpx.post(srv.url + "/admin/evolver/tick", json={}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def _events(agent: ConventionFollower) -> list[Any]:
    tasks = [t for t in agent.affected() if t.template == "event"]
    assert len(tasks) >= 5
    return tasks


def test_the_interval_is_judged_on_the_loops_clock_and_the_skill_is_served_at_once(
        tmp_path: Path, follower: Any) -> None:
    fake, agent = follower
    clock = Clock()
    tasks = _events(agent)
    srv = _start(tmp_path, fake.url, clock, trigger_failures=50, interval_s=300)
    try:
        before = _play(srv, tasks[:2])
        assert all(r.tool_errors >= 1 for r in before)
        assert _tick(srv) == []  # failures pending, but neither 50 of them nor 300 s on the clock
        clock.skipped += 301  # a user's next task comes minutes later
        reports = _tick(srv)
        assert [r["status"] for r in reports] == ["done"], reports
        assert [p["status"] for p in reports[0]["proposals"]] == ["accepted"]
        listed = httpx.get(srv.url + "/admin/evolutions", timeout=30).json()
        assert listed[0]["trigger"] == "interval"
        # served from the very next request, without waiting for the skills watcher
        after = _play(srv, tasks[2:4])
        assert all(r.tool_errors == 0 and r.success for r in after)
        assert _tick(srv) == []  # nothing new failed
    finally:
        srv.__exit__(None, None, None)


def test_feedback_after_a_sessions_last_turn_counts_as_new(tmp_path: Path, follower: Any) -> None:
    """A score filed after the session ended is a failure the loop sees without a new turn."""
    fake, agent = follower
    clock = Clock()
    tasks = _events(agent)
    srv = _start(tmp_path, fake.url, clock, trigger_failures=3, interval_s=3600)
    try:
        played = _play(srv, tasks[:2], feedback=False)
        assert [r.tool_errors for r in played] == [1, 1]  # two tool errors: under the trigger of 3
        assert _tick(srv) == []
        # the user scores the last (answer) turn of the first session badly, after it ended
        r = httpx.post(srv.url + "/v1/feedback", json={"turn_id": played[0].turn_ids[-1], "score": -1.0},
                       timeout=30)
        assert r.status_code == 200, r.text
        reports = _tick(srv)
        assert len(reports) == 1 and reports[0]["failures"] == 3, reports
        listed = httpx.get(srv.url + "/admin/evolutions", timeout=30).json()
        assert listed[0]["trigger"] == "failures"
    finally:
        srv.__exit__(None, None, None)


def test_tick_needs_a_running_loop(tmp_path: Path, follower: Any) -> None:
    fake, _ = follower
    srv = _start(tmp_path, fake.url, Clock(), enabled=False)
    try:
        r = httpx.post(srv.url + "/admin/evolver/tick", json={}, timeout=30)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "evolver_loop_off"
        assert "POST /admin/evolve" in r.json()["error"]["message"]
    finally:
        srv.__exit__(None, None, None)
