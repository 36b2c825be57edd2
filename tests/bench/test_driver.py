"""The agent driver against molt serving the shipped tiny policy: trajectories and feedback land."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from bench.agent import AgentDriver
from bench.policy.data import DEFAULT_SYSTEM_PROMPT
from bench.runner import DEFAULT_CHECKPOINT
from bench.toolworld import generate_tasks
from molt.config import load_settings
from molt.embedded import ServerThread
from molt.wiring import build_app

pytestmark = pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "config.json").exists(),
                                reason="the tiny policy checkpoint is not built (python -m bench.policy.pretrain)")


def test_driver_runs_episodes_through_molt(tmp_path: Path) -> None:
    settings = load_settings(None, {
        "data_dir": str(tmp_path / "data"),
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/molt.db"},
        "models": [{"alias": "tiny", "local": str(DEFAULT_CHECKPOINT)}],
        "skills": {"enabled": False}, "evolver": {"enabled": False},
    })
    tasks = generate_tasks(1, 3, seed=5)
    with ServerThread(build_app(settings)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        driver = AgentDriver(client, "tiny", system_prompt=DEFAULT_SYSTEM_PROMPT, max_steps=4)
        results = [driver.run(t) for t in tasks]
        driver.close()
        state: Any = srv.app.state.molt
        srv.call(state.recorder.flush())
        sessions = srv.call(state.trajectories.list_sessions())
        details = [srv.call(state.trajectories.get_session(s.id)) for s in sessions]
    assert len(sessions) == len(tasks)  # one session per episode (X-Session-Id)
    by_ext = {d.summary.external_id: d for d in details}
    for r in results:
        d = by_ext[r.session_id]
        assert [t["id"] for t in d.turns] == r.turn_ids
        assert all(t["weight_version"] for t in d.turns)  # the served version is stamped
        verdict = [f for f in d.feedback if f["turn_id"] is None]
        assert len(verdict) == 1 and verdict[0]["source"] == "verifier"
        assert (verdict[0]["score"] >= 0) == r.success
        if r.steps:
            assert any(f["turn_id"] for f in d.feedback)  # step rewards per turn
