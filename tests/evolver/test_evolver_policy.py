"""The offline evolver on the real tiny policy: a drifted date rule learned from tool errors.

Real molt serving the shipped checkpoint on the local backend, real toolworld
with its tools validating through pydantic (`--errors pydantic`), the real
driver. Day 4 switches dates to DD.MM.YYYY without telling anyone: the policy
writes ISO dates out of habit and the tools refuse them in pydantic's words
("Value error, date should be in DD.MM.YYYY format, e.g. 05.03.2026"). After
one evolution the rule is served in molt's own words (not the error's text,
not its example value, not a pretraining sentence), and the policy trips over
the tools' errors less often.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.agent import AgentDriver, EpisodeResult
from bench.policy.data import DEFAULT_SYSTEM_PROMPT
from bench.runner import DEFAULT_CHECKPOINT
from bench.toolworld import Task, generate_tasks
from molt.config import load_settings
from molt.embedded import ServerThread, free_port
from molt.wiring import build_app

pytestmark = pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "config.json").exists(),
                                reason="the tiny policy checkpoint is not built")

DAY = 4  # dates drift to DD.MM.YYYY


def _tasks(n: int) -> list[Task]:
    """Day-4 calendar tasks (one template, so the rule learned from them is the one retrieved)."""
    tasks = [t for t in generate_tasks(DAY, 200, seed=21) if t.template == "event"]
    assert len(tasks) >= n
    return tasks[:n]


def _play(srv: ServerThread, tasks: list[Task]) -> list[EpisodeResult]:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=120)
    driver = AgentDriver(client, "tiny", system_prompt=DEFAULT_SYSTEM_PROMPT, max_steps=4, errors="pydantic")
    try:
        return [driver.run(t) for t in tasks]
    finally:
        driver.close()


def _turns(srv: ServerThread) -> list[dict[str, Any]]:
    state = srv.app.state.molt  # type: ignore[attr-defined]
    srv.call(state.recorder.flush())
    return srv.call(state.trajectories.turns_since(0))  # type: ignore[no-any-return]


def test_tiny_policy_stops_tripping_on_a_drifted_date_after_one_evolution(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(None, {
        "server": {"port": port},
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/molt.db"},
        "models": [{"alias": "tiny", "local": str(DEFAULT_CHECKPOINT)}],
        # the tiny policy reads 1,024 tokens: the skills block leaves room for pydantic's long errors
        "skills": {"enabled": True, "seed_dir": None, "poll_interval_s": 0.2, "token_budget": 300},
        "evolver": {"enabled": False, "min_support": 2, "optimize_context": False},
    })
    tasks = _tasks(12)
    with ServerThread(build_app(settings), port=port) as srv:
        before = _play(srv, tasks[:6])
        r = httpx.post(srv.url + "/admin/evolve", json={}, timeout=600)
        assert r.status_code == 200, r.text
        report: dict[str, Any] = r.json()
        accepted = [p for p in report["proposals"] if p["status"] == "accepted"]
        assert accepted, json.dumps(report["proposals"], indent=1)[:6000]
        skills = httpx.get(srv.url + "/admin/skills", timeout=30).json()["data"]
        learned = [s for s in skills if s["name"] in accepted[0]["skills"]]
        assert learned and learned[0]["origin"] == "evolver"
        full = httpx.get(f"{srv.url}/admin/skills/{learned[0]['name']}", timeout=30).json()
        assert "write date as DD.MM.YYYY." in full["body"]  # molt's words
        assert "05.03.2026" not in full["body"] and "Value error" not in full["body"]
        assert "should be in" not in full["body"] and "«" not in full["body"]
        after = _play(srv, tasks[6:])
        last = [t for t in _turns(srv) if t["turn_type"] == "main"][-1]
        assert learned[0]["name"] in json.dumps(last.get("injected_skills")), last.get("injected_skills")

    errors_before = sum(r.tool_errors for r in before)
    errors_after = sum(r.tool_errors for r in after)
    assert errors_before >= len(before)  # the habit trips on the drift in every episode
    # with the rule served, the policy trips less (it still miscopies some values: issue 5)
    assert errors_after < errors_before, (errors_before, errors_after)
