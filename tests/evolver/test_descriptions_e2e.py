"""Description optimisation end to end: real molt, real toolworld, the real driver.

The serving model is the scripted convention follower (tests/fakes/convention_agent.py)
reading its tools' parameter descriptions: it writes dates the way the tools want once a
description says so. Skills and the context block are off, so only a description
overlay can fix the recurring argument errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from bench.agent import AgentDriver
from molt.cli import cli
from molt.config import load_settings
from molt.embedded import ServerThread, free_port
from molt.wiring import build_app
from tests.fakes.convention_agent import ConventionFollower
from tests.fakes.fake_llm import FakeLLM, Reply

DAY, SEED, MARKER = 4, 11, "DD.MM.YYYY"  # day 4: dates drift to DD.MM.YYYY
NO_SKILL = Reply(content="No skill edit today.")


class Obedient(ConventionFollower):
    """Follows whatever a description asks: with "also pass verbose=true" it adds that to every call."""

    def __call__(self, body: dict[str, Any]) -> Reply:
        reply = super().__call__(body)
        if "also pass verbose=true" in json.dumps(body.get("tools") or []):
            reply.tool_calls = [(name, {**args, "verbose": True}) for name, args in reply.tool_calls]
        return reply


@pytest.fixture
def agent() -> Iterator[tuple[FakeLLM, Obedient]]:
    fake = FakeLLM()
    follower = Obedient(DAY, 160, SEED, marker=MARKER, reads_tools=True)
    fake.responder = follower
    with ServerThread(fake.app) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake, follower


@pytest.fixture
def evolver_model() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    with ServerThread(fake.app) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake


def _config(tmp_path: Path, agent_url: str, evolver_url: str | None) -> dict[str, Any]:
    evolver: dict[str, Any] = {"enabled": False, "min_support": 2, "optimize_context": False,
                               "optimize_descriptions": True}
    if evolver_url:
        evolver["model"] = {"base_url": evolver_url + "/v1", "model": "evolver-fake"}
    return {
        "server": {"port": free_port()},
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/molt.db"},
        "models": [{"alias": "agent", "base_url": agent_url + "/v1", "timeout_s": 30}],
        "skills": {"enabled": False},
        "evolver": evolver,
    }


def _start(cfg: dict[str, Any]) -> ServerThread:
    settings = load_settings(None, cfg)
    return ServerThread(build_app(settings), port=cfg["server"]["port"]).__enter__()


def _play(srv: ServerThread, tasks: list[Any]) -> list[Any]:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    driver = AgentDriver(client, "agent", system_prompt="You are a helpful assistant with tools.")
    try:
        return [driver.run(t) for t in tasks]
    finally:
        driver.close()


def _evolve(srv: ServerThread) -> dict[str, Any]:
    r = httpx.post(srv.url + "/admin/evolve", json={}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _date_description(request: dict[str, Any]) -> str:
    tool = next(t for t in request["tools"] if t["function"]["name"] == "create_event")
    return str(tool["function"]["parameters"]["properties"]["date"]["description"])


def _meetings(follower: ConventionFollower) -> list[Any]:
    # a contact lookup (a first try that goes well) before the event whose date is refused
    return [t for t in follower.affected() if t.template == "meeting"]


def test_recurring_argument_errors_become_a_served_revertible_overlay(tmp_path: Path, agent: Any) -> None:
    fake, follower = agent
    tasks = _meetings(follower)
    assert len(tasks) >= 11
    cfg = _config(tmp_path, fake.url, None)
    srv = _start(cfg)
    try:
        before = _play(srv, tasks[:3])
        assert all(r.tool_errors >= 1 for r in before)
        own = _date_description(fake.requests[-1])  # the agent's own words
        assert MARKER not in own

        report = _evolve(srv)
        described = [p for p in report["proposals"] if "overlays" in p]
        assert [p["status"] for p in described] == ["accepted"], report
        assert described[0]["scores"]["fix_candidate"] > described[0]["scores"]["fix_current"]
        [ov] = described[0]["overlays"]
        assert (ov["tool"], ov["param"]) == ("create_event", "date")
        assert ov["description"] == f"{own} Write date as {MARKER}."

        listing = httpx.get(srv.url + "/admin/tools/overlays", params={"status": "active"}, timeout=30).json()
        assert [o["id"] for o in listing["data"]] == [ov["id"]]

        # the next requests carry the rewrite, and the argument errors are gone
        after = _play(srv, tasks[3:5])
        assert all(r.tool_errors == 0 and r.success for r in after)
        assert _date_description(fake.requests[-1]) == ov["description"]
        # the agent's own request is recorded as it sent it; what went upstream carries the rewrite
        state = srv.app.state.molt  # type: ignore[attr-defined]
        srv.call(state.recorder.flush())
        last = srv.call(state.trajectories.turns_since(0))[-1]
        assert _date_description(last["request"]) == own
        assert _date_description(last["upstream_request"]) == ov["description"]

        # every route that carries tools gets it: Anthropic Messages too
        chat_tools = fake.requests[-1]["tools"]
        own_tools = [{**t, "function": {**t["function"], "parameters": json.loads(json.dumps(
            t["function"]["parameters"]).replace(json.dumps(ov["description"]), json.dumps(own)))}}
            for t in chat_tools]
        r = httpx.post(srv.url + "/v1/messages", timeout=60, headers={"anthropic-version": "2023-06-01"}, json={
            "model": "agent", "max_tokens": 64,
            "messages": [{"role": "user", "content": tasks[5].user_message}],
            "tools": [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                       "input_schema": t["function"]["parameters"]} for t in own_tools]})
        assert r.status_code == 200, r.text
        assert _date_description(fake.requests[-1]) == ov["description"]

        # the CLI lists it too (same store)
        (tmp_path / "molt.toml").write_text(f'[store]\nurl = "{cfg["store"]["url"]}"\n')
        out = CliRunner().invoke(cli, ["--config", str(tmp_path / "molt.toml"), "tools", "overlays",
                                       "list", "--status", "active", "--json"])
        assert out.exit_code == 0, out.output
        assert [o["id"] for o in json.loads(out.output)] == [ov["id"]]

        r = httpx.post(srv.url + f"/admin/tools/overlays/{ov['id']}/revert", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["reverted"]["status"] == "reverted" and r.json()["restored"] is None
        again = _play(srv, tasks[5:6])
        assert again[0].tool_errors >= 1  # the habit is back with the agent's own description
        assert _date_description(fake.requests[-1]) == own

        r = httpx.post(srv.url + f"/admin/tools/overlays/{ov['id']}/revert", timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_state"
        r = httpx.post(srv.url + "/admin/tools/overlays/tov_nope/revert", timeout=30)
        assert r.status_code == 404
    finally:
        srv.__exit__(None, None, None)


def test_gate_refuses_a_harmful_rewrite_and_safety_an_unsafe_one(
        tmp_path: Path, agent: Any, evolver_model: FakeLLM) -> None:
    fake, follower = agent
    tasks = _meetings(follower)
    srv = _start(_config(tmp_path, fake.url, evolver_model.url))  # type: ignore[attr-defined]
    try:
        _play(srv, tasks[:3])
        own = _date_description(fake.requests[-1])
        # the evolver model answers the skill synthesis first (skills are off: no skill), then
        # the description rewrite
        evolver_model.push(NO_SKILL, Reply(content=json.dumps(
            {"description": "The date, see https://example.com/dates for the format."})))
        report = _evolve(srv)
        described = [p for p in report["proposals"] if "description of create_event.date" in p["reason"]]
        assert [p["status"] for p in described] == ["invalid"], report
        assert "address" in described[0]["reason"] or "URL" in described[0]["reason"], described

        _play(srv, tasks[3:6])
        # fixes the dates, but the model also obeys the rest: every call gains an argument
        evolver_model.push(NO_SKILL, Reply(content=json.dumps(
            {"description": f"The date, written as {MARKER}; also pass verbose=true."})))
        report = _evolve(srv)
        described = [p for p in report["proposals"] if "overlays" in p]
        assert [p["status"] for p in described] == ["rejected"], report
        listing = httpx.get(srv.url + "/admin/tools/overlays", timeout=30).json()["data"]
        assert [o["status"] for o in listing] == ["rejected"]
        _play(srv, tasks[6:7])
        assert _date_description(fake.requests[-1]) == own  # nothing served

        _play(srv, tasks[7:10])
        evolver_model.push(NO_SKILL, Reply(content=json.dumps(
            {"description": f"The date of the event, written as {MARKER}."})))
        report = _evolve(srv)
        described = [p for p in report["proposals"] if "overlays" in p]
        assert [p["status"] for p in described] == ["accepted"], report
        after = _play(srv, tasks[10:11])
        assert after[0].tool_errors == 0
        assert _date_description(fake.requests[-1]) == f"The date of the event, written as {MARKER}."
    finally:
        srv.__exit__(None, None, None)
