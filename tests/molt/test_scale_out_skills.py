"""A skill learned from failures seen by one replica is served by the other (issue 18).

Two `molt proxy` processes and one `molt worker`, on a real PostgreSQL server, a real
Chroma server (`chroma run`) and one registry URL, each proxy serving the shipped tiny
policy on CPU. Toolworld's agent (bench/agent.py, its tools answering in pydantic's
words) plays day-4 calendar tasks through replica A only: dates drifted to DD.MM.YYYY,
the policy writes ISO dates, the tools refuse them. The worker's evolver loop (the only
one running: proxies run none) notices the failures in the store, gates a rule by
replaying turns through A, and applies it. Replica B, which saw none of those failures,
then injects that rule into the agent's requests: through the store's generation and
the shared Chroma index.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import openai
import pytest

from bench.agent import AgentDriver
from bench.policy.data import DEFAULT_SYSTEM_PROMPT
from bench.toolworld import Task, generate_tasks
from store.database import Database
from store.errors import NotFound
from store.settings import StoreSettings
from store.trajectories import TrajectoryStore
from tests.molt.cluster import Procs, start_replicas

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

DAY = 4  # dates drift to DD.MM.YYYY
FIRST_EPISODES_ON_A = 3
MAX_EPISODES_ON_A = 8
# A safety net only: the test fails on its episode budget (MAX_EPISODES_ON_A, each
# followed by a finished evolution), not on wall time, which a loaded machine stretches.
LEARN_TIMEOUT_S = 600


def _tasks(n: int) -> list[Task]:
    """Day-4 calendar tasks: one template, so the rule learned from them is the one retrieved."""
    tasks = [t for t in generate_tasks(DAY, 200, seed=21) if t.template == "event"]
    assert len(tasks) >= n
    return tasks[:n]


def _driver(url: str) -> AgentDriver:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    return AgentDriver(client, "tiny", system_prompt=DEFAULT_SYSTEM_PROMPT, max_steps=4,
                       errors="pydantic")


def _learned(url: str) -> list[dict[str, Any]]:
    """The active skills the evolver wrote, as a replica lists them."""
    r = httpx.get(f"{url}/admin/skills", timeout=30)
    assert r.status_code == 200, r.text
    return [s for s in r.json()["data"] if s["origin"] == "evolver" and s["status"] == "active"]


def _evolutions(url: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/admin/evolutions", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _turns(turn_ids: list[str]) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        db = await Database.open(StoreSettings(url=os.environ["MOLT_TEST_PG_URL"]))
        try:
            store = TrajectoryStore(db)
            return [await store.get_turn(t) for t in turn_ids]
        finally:
            await db.close()

    return asyncio.run(read())


def test_a_skill_learned_from_failures_on_replica_a_is_served_by_replica_b(
        policy_procs: Procs) -> None:
    a, b, w = start_replicas(policy_procs)
    tasks = _tasks(MAX_EPISODES_ON_A + 2)

    # failures through A only: a few episodes, then one more after each evolution that
    # learned nothing (the worker evolves on 4 new failure cases, or every 30 s)
    driver_a = _driver(a.url)
    try:
        on_a = [driver_a.run(task) for task in tasks[:FIRST_EPISODES_ON_A]]
        more = iter(tasks[FIRST_EPISODES_ON_A:MAX_EPISODES_ON_A])
        deadline = time.monotonic() + LEARN_TIMEOUT_S
        fruitless = 0
        while not (learned := _learned(b.url)):
            done = [e for e in _evolutions(b.url) if e["finished_at"] is not None]
            if len(done) > fruitless:
                task = next(more, None)
                if task is None:  # the episode budget is spent: the last evolution decides
                    learned = _learned(b.url)
                    assert learned, (
                        f"the worker learned nothing from {len(on_a)} episodes:\n{w.log_text()}")
                    break
                fruitless = len(done)
                on_a.append(driver_a.run(task))
            assert time.monotonic() < deadline, f"the worker learned nothing:\n{w.log_text()}"
            time.sleep(0.5)
    finally:
        driver_a.close()
    assert all(r.error is None for r in on_a), [r.error for r in on_a]
    assert sum(r.tool_errors for r in on_a) >= len(on_a)  # the habit trips on the drift

    # learned by the worker's loop, from A's turns
    evolutions = _evolutions(b.url)
    assert evolutions and {e["trigger"] for e in evolutions} <= {"failures", "interval"}
    skill = httpx.get(f"{b.url}/admin/skills/{learned[0]['name']}", timeout=30).json()
    seen_by_a = {tid for r in on_a for tid in r.turn_ids}
    assert skill["provenance"] and set(skill["provenance"]) <= seen_by_a, skill["provenance"]
    assert "DD.MM.YYYY" in skill["body"]

    # served by B: the agent's next requests through B carry the rule
    driver_b = _driver(b.url)
    try:
        on_b = [driver_b.run(task) for task in tasks[MAX_EPISODES_ON_A:]]
    finally:
        driver_b.close()
    assert all(r.error is None for r in on_b), [r.error for r in on_b]
    turn_ids = [tid for r in on_b for tid in r.turn_ids]
    deadline = time.monotonic() + 30
    while True:  # B's recorder writes in batches
        try:
            turns = _turns(turn_ids)
            break
        except NotFound:  # not written yet
            assert time.monotonic() < deadline, "B's turns never reached the store"
            time.sleep(0.3)
    injected = [json.dumps(t.get("injected_skills")) for t in turns if t["turn_type"] == "main"]
    assert injected and all(learned[0]["name"] in i for i in injected), injected
