"""The evolver end to end: real molt, real toolworld, the real driver, a scripted remote model.

The serving model is a scripted stand-in for a remote LLM that follows a
convention only when told (tests/fakes/convention_agent.py), so these tests
pin down the evolver's mechanics; `test_evolver_policy.py` shows the same loop
on the tiny policy.
"""

from __future__ import annotations

import json
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
from tests.fakes.fake_llm import FakeLLM, Reply

DAY, SEED = 4, 11  # day 4: dates drift to DD.MM.YYYY


@pytest.fixture
def agent_model() -> Iterator[tuple[FakeLLM, ConventionFollower]]:
    fake = FakeLLM()
    follower = ConventionFollower(DAY, 80, SEED, marker="DD.MM.YYYY")
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


def _start(tmp_path: Path, agent_url: str, *, skills: dict[str, Any] | None = None,
           evolver: dict[str, Any] | None = None) -> ServerThread:
    """A fresh molt in front of the scripted agent model (the evolver replays through its port)."""
    port = free_port()
    settings = load_settings(None, {
        "server": {"port": port},
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/molt.db"},
        "models": [{"alias": "agent", "base_url": agent_url + "/v1", "timeout_s": 30}],
        "skills": skills or {"enabled": True, "seed_dir": None, "poll_interval_s": 0.2},
        "evolver": {"enabled": False, "min_support": 2, "optimize_context": False, **(evolver or {})},
    })
    return ServerThread(build_app(settings), port=port).__enter__()


def _molt(tmp_path: Path, agent_url: str, evolver_url: str | None = None) -> ServerThread:
    model = {"model": {"base_url": evolver_url + "/v1", "model": "evolver-fake"}} if evolver_url else {}
    return _start(tmp_path, agent_url, evolver=model)


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


def _turns(srv: ServerThread) -> list[dict[str, Any]]:
    state = srv.app.state.molt  # type: ignore[attr-defined]
    srv.call(state.recorder.flush())
    return srv.call(state.trajectories.turns_since(0))  # type: ignore[no-any-return]


def test_offline_evolver_learns_from_tool_errors(tmp_path: Path, agent_model: Any) -> None:
    fake, follower = agent_model
    # one kind of task, so that the skill learned from its failures is the one retrieved
    tasks = [t for t in follower.affected() if t.template == "event"]
    assert len(tasks) >= 8
    srv = _molt(tmp_path, fake.url)
    try:
        before = _play(srv, tasks[:4])
        assert all(r.tool_errors >= 1 for r in before)  # the habit trips on the drifted dates
        report = _evolve(srv)
        accepted = [p for p in report["proposals"] if p["status"] == "accepted"]
        assert len(accepted) == 1, report
        assert accepted[0]["scores"]["fix_candidate"] > accepted[0]["scores"]["fix_current"]

        skills = httpx.get(srv.url + "/admin/skills", timeout=30).json()
        learned = [s for s in skills["data"] if s["name"] in accepted[0]["skills"]]
        assert learned and learned[0]["origin"] == "evolver"
        failing = {t["id"] for t in _turns(srv) if t["turn_type"] == "main"
                   and (t.get("tool_calls") or []) and "date" in json.dumps(t["tool_calls"])}
        assert set(learned[0]["provenance"]) <= failing and learned[0]["provenance"]

        gen_before = max(t["skill_generation"] or 0 for t in _turns(srv) if t["turn_type"] == "main")
        after = _play(srv, tasks[4:8])
        assert all(r.tool_errors == 0 and r.success for r in after)
        main = [t for t in _turns(srv) if t["turn_type"] == "main"][-len(after):]
        assert all(any(s["id"] == learned[0]["name"] for s in (t["injected_skills"] or [])) for t in main)
        assert all(t["skill_generation"] > gen_before for t in main)
        # a second evolution with nothing new proposes nothing
        assert _evolve(srv)["proposals"] == []
    finally:
        srv.__exit__(None, None, None)


def _edit(name: str, body: str, turn_ids: list[str]) -> str:
    return json.dumps({"edits": [{"op": "add", "name": name, "description": "How to write dates for tools",
                                  "body": body, "tools": ["create_event"], "reason": "date errors",
                                  "turn_ids": turn_ids}]})


def test_llm_evolver_gate_accepts_helpful_rejects_harmful_and_malformed(
        tmp_path: Path, agent_model: Any, evolver_model: FakeLLM) -> None:
    fake, follower = agent_model
    tasks = [t for t in follower.affected() if t.template == "event"]
    srv = _molt(tmp_path, fake.url, evolver_model.url)  # type: ignore[attr-defined]
    try:
        _play(srv, tasks[:3])
        evolver_model.push(Reply(content="Sorry, I cannot produce JSON today."))
        report = _evolve(srv)
        assert [p["status"] for p in report["proposals"]] == ["invalid"]
        assert "JSON" in report["proposals"][0]["reason"]

        _play(srv, tasks[3:6])
        evolver_model.push(Reply(content=_edit(
            "us-dates", "1. Write every date as MM/DD/YYYY.\n\nAnti-patterns:\n- Other formats.", [])))
        report = _evolve(srv)
        assert [p["status"] for p in report["proposals"]] == ["rejected"]
        assert "minibatch" in report["proposals"][0]["reason"]

        _play(srv, tasks[6:9])
        prompt_seen: list[str] = []
        evolver_model.push(Reply(content="```json\n" + _edit(
            "tool-dates", "1. Tools want dates as DD.MM.YYYY (27.11.2026).\n\nAnti-patterns:\n- 2026-11-27.",
            []) + "\n```"))
        report = _evolve(srv)
        prompt_seen.append(evolver_model.requests[-1]["messages"][1]["content"])
        assert [p["status"] for p in report["proposals"]] == ["accepted"], report
        assert "date must be DD.MM.YYYY" in prompt_seen[0]
        listing = httpx.get(srv.url + "/admin/proposals", timeout=30).json()
        assert sorted(p["status"] for p in listing) == ["accepted", "invalid", "rejected"]
        after = _play(srv, tasks[9:11])
        assert all(r.tool_errors == 0 for r in after)
    finally:
        srv.__exit__(None, None, None)


def test_context_block_evolves_and_is_served(tmp_path: Path, agent_model: Any) -> None:
    """Fast weights: with skills off, the context optimizer fixes the drift in the context block."""
    fake, follower = agent_model
    tasks = [t for t in follower.affected() if t.template == "event"]
    srv = _start(tmp_path, fake.url, skills={"enabled": False}, evolver={"optimize_context": True})
    try:
        _play(srv, tasks[:4])
        report = _evolve(srv)
        assert [p["status"] for p in report["proposals"]] == ["rejected"]  # skills are off
        ctx = report["context"]
        assert ctx["activated"] and "DD.MM.YYYY" in ctx["activated"], ctx
        assert ctx["front"]
        after = _play(srv, tasks[4:7])
        assert all(r.tool_errors == 0 and r.success for r in after)
        main = [t for t in _turns(srv) if t["turn_type"] == "main"][-3:]
        assert {t["context_version"] for t in main} == {"v2"}  # v1: the candidate, v2: its activation
        sent = fake.requests[-1]["messages"]
        assert any(m["role"] == "system" and m["content"].startswith("<molt-context>") for m in sent)
    finally:
        srv.__exit__(None, None, None)


def test_one_failure_is_not_yet_a_pattern_for_the_context_block(tmp_path: Path, agent_model: Any) -> None:
    """The context block learns from recurring failures only, as the skills do (min_support)."""
    fake, follower = agent_model
    tasks = [t for t in follower.affected() if t.template == "event"]
    srv = _start(tmp_path, fake.url, skills={"enabled": False}, evolver={"optimize_context": True})
    try:
        _play(srv, tasks[:1])
        report = _evolve(srv)
        assert report["failures"] >= 1 and report["proposals"] == [] and report["context"] == {}, report
        _play(srv, tasks[1:2])  # the same failure again: now it recurs
        ctx = _evolve(srv)["context"]
        assert ctx["activated"] and "DD.MM.YYYY" in ctx["activated"], ctx
    finally:
        srv.__exit__(None, None, None)


def test_an_accepted_skill_takes_over_the_context_lines_about_the_same_argument(
        tmp_path: Path, agent_model: Any) -> None:
    """A skill and a context line must not state two forms for one argument."""
    from store.evolution import EvolutionStore

    fake, follower = agent_model
    tasks = [t for t in follower.affected() if t.template == "event"]
    srv = _start(tmp_path, fake.url, evolver={"optimize_context": True})
    try:
        state = srv.app.state.molt  # type: ignore[attr-defined]
        store = EvolutionStore(state.db)
        tenant = srv.call(state.keys.ensure_tenant("default"))
        # a stale line from before the tools changed, next to one about something else
        srv.call(store.add_context(tenant.id, "When calling create_event, write date as MM/DD/YYYY.\nKeep answers short.",
                                   parent=None, status="active", scores=None))
        _play(srv, tasks[:4])
        report = _evolve(srv)
        accepted = [p for p in report["proposals"] if p["status"] == "accepted"]
        assert len(accepted) == 1 and accepted[0]["context"], report
        active = srv.call(store.active_context(tenant.id))
        assert active is not None and active.text == "Keep answers short."
        after = _play(srv, tasks[4:7])
        assert all(r.tool_errors == 0 and r.success for r in after)
    finally:
        srv.__exit__(None, None, None)


def test_loop_evolves_on_its_own_after_n_failures(tmp_path: Path, agent_model: Any) -> None:
    import time

    fake, follower = agent_model
    tasks = [t for t in follower.affected() if t.template == "event"]
    srv = _start(tmp_path, fake.url, evolver={"enabled": True, "poll_s": 0.3, "trigger_failures": 3,
                                              "interval_s": 3600})
    try:
        _play(srv, tasks[:3])
        deadline = time.monotonic() + 60
        evolutions: list[Any] = []
        while time.monotonic() < deadline:
            evolutions = httpx.get(srv.url + "/admin/evolutions", timeout=30).json()
            if evolutions and evolutions[0]["status"] == "done":
                break
            time.sleep(0.3)
        assert evolutions and evolutions[0]["trigger"] == "failures"
        assert [p["status"] for p in evolutions[0]["summary"]["proposals"]] == ["accepted"]
        time.sleep(0.5)  # the skills watcher picks the new generation up
        assert all(r.tool_errors == 0 for r in _play(srv, tasks[3:5]))
    finally:
        srv.__exit__(None, None, None)


def test_cli_evolve_now_and_listings(tmp_path: Path, agent_model: Any) -> None:
    """`molt evolve --now` works from another process against a running proxy."""
    import time

    from click.testing import CliRunner

    from molt.cli import cli

    fake, follower = agent_model
    tasks = [t for t in follower.affected() if t.template == "event"]
    srv = _start(tmp_path, fake.url)
    try:
        _play(srv, tasks[:3])
        srv.call(srv.app.state.molt.recorder.flush())  # type: ignore[attr-defined]
        cfg = tmp_path / "molt.toml"
        cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {srv.port}\n'
                       f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/molt.db"\n'
                       f'[evolver]\noptimize_context = false\n')
        run = CliRunner().invoke
        r = run(cli, ["--config", str(cfg), "evolve", "--now", "--json"])
        assert r.exit_code == 0, r.output
        report = json.loads(r.output)
        assert [p["status"] for p in report["proposals"]] == ["accepted"]
        listed = json.loads(run(cli, ["--config", str(cfg), "evolve", "proposals", "--json"]).output)
        assert [p["status"] for p in listed] == ["accepted"] and listed[0]["provenance"]
        text = run(cli, ["--config", str(cfg), "evolve", "proposals"]).output
        assert "accepted" in text and "rule-date" in text
        assert json.loads(run(cli, ["--config", str(cfg), "evolve", "contexts", "--json"]).output) == []
        time.sleep(1.0)  # the proxy's watcher notices the new generation
        assert all(r.tool_errors == 0 for r in _play(srv, tasks[3:5]))
    finally:
        srv.__exit__(None, None, None)
