"""A promotion reaches both replicas with no failed request (issue 18).

Two `molt proxy` processes and one `molt worker` on a real PostgreSQL server, a real
Chroma server and one registry URL (`file://`, read through fsspec by every process),
each proxy serving the shipped tiny policy. A LoRA version of the policy is registered
as a trainer would; while toolworld's agent plays episodes through both replicas and a
probe loop asks each one for a short answer, an operator runs `molt versions promote`.
Every request succeeds, and each replica answers from the new version within seconds
(it polls the registry's pointer), never going back to the base weights after.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import openai
import pytest

from bench.agent import AgentDriver, EpisodeResult
from bench.policy.data import DEFAULT_SYSTEM_PROMPT
from bench.runner import DEFAULT_CHECKPOINT
from bench.toolworld import generate_tasks
from store.database import Database
from store.errors import NotFound
from store.registry import Registry
from store.registry_check import base_fingerprint
from store.settings import StoreSettings
from store.trajectories import TrajectoryStore
from tests.fakes.tiny_model import make_lora
from tests.molt.cluster import Procs, start_replicas

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

NEW = "v0001"
# A liveness bound, not a speed target: the figures seen are in the failure message.
SWITCH_DEADLINE_S = 60.0
PAUSE_S = 0.1  # between one client's requests: steady traffic that leaves the CLI some CPU


@dataclass
class Answer:
    replica: str
    sent: float
    done: float
    version: str | None
    error: str | None


class Traffic:
    """Clients on both replicas until stopped: a probe loop each, and toolworld's agent."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.stop = threading.Event()
        self.answers: list[Answer] = []
        self.episodes: list[EpisodeResult] = []
        self.threads = [threading.Thread(target=self._probe, args=(n,)) for n in urls]
        self.threads += [threading.Thread(target=self._agent, args=(n,)) for n in urls]

    def _client(self, name: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.urls[name]}/v1", api_key="x", max_retries=0,
                             timeout=120)

    def _probe(self, name: str) -> None:
        client = self._client(name)
        for i in itertools.count():
            if self.stop.is_set():
                return
            sent = time.time()  # wall clock: compared with the registry history's times
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="tiny", max_tokens=8, temperature=0,
                    messages=[{"role": "user", "content": f"Say hello ({i})."}])
                raw.parse()
                self.answers.append(Answer(name, sent, time.time(),
                                           raw.headers.get("x-molt-weight-version"), None))
            except openai.APIError as exc:
                self.answers.append(Answer(name, sent, time.time(), None, repr(exc)))
            time.sleep(PAUSE_S)

    def _agent(self, name: str) -> None:
        driver = AgentDriver(self._client(name), "tiny", system_prompt=DEFAULT_SYSTEM_PROMPT,
                             max_steps=3)
        try:
            for task in itertools.cycle(generate_tasks(1, 20, seed=5)):
                if self.stop.is_set():
                    return
                self.episodes.append(driver.run(task))
                time.sleep(PAUSE_S)
        finally:
            driver.close()

    def seen(self, replica: str, version: str) -> list[Answer]:
        return [a for a in self.answers if a.replica == replica and a.version == version]

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=180)


def _wait(check: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _stored_versions(turn_ids: list[str]) -> list[tuple[str | None, str]]:
    async def read() -> list[tuple[str | None, str]]:
        db = await Database.open(StoreSettings(url=os.environ["MOLT_TEST_PG_URL"]))
        try:
            store = TrajectoryStore(db)
            out = []
            for tid in turn_ids:
                turn = await store.get_turn(tid)
                out.append((turn["weight_version"], turn["status"]))
            return out
        finally:
            await db.close()

    deadline = time.monotonic() + 30
    while True:  # the recorders write in batches
        try:
            return asyncio.run(read())
        except NotFound:
            assert time.monotonic() < deadline, "turns never reached the store"
            time.sleep(0.3)


def test_a_promotion_reaches_both_replicas_with_no_failed_request(
        policy_procs: Procs, tmp_path: Path) -> None:
    registry = Registry(f"file://{tmp_path}/registry", cache_dir=tmp_path / "trainer-cache")

    def register() -> None:  # as a trainer would: a LoRA of the policy, a candidate
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecations
            lora = make_lora(DEFAULT_CHECKPOINT, tmp_path / "lora", seed=1, scale=0.02)
        meta = registry.create("default", "tiny", kind="lora", files_from=lora,
                               base_model="tiny", base_hash=base_fingerprint(DEFAULT_CHECKPOINT))
        assert meta.version == NEW

    a, b, _w = start_replicas(policy_procs, meanwhile=register)

    with Traffic({"a": a.url, "b": b.url}) as traffic:
        _wait(lambda: all(len(traffic.seen(r, "base")) >= 3 for r in "ab"),
              f"no traffic on the base weights: {traffic.answers[-4:]}", 120)
        out = policy_procs.cli("a", "versions", "promote", NEW, "--reason", "scale-out test")
        assert out.returncode == 0, out.stderr
        assert f"default/tiny: base weights -> {NEW}" in out.stdout
        flipped = float(registry.history("default", "tiny")[-1]["at"])  # the pointer's flip
        _wait(lambda: all(traffic.seen(r, NEW) for r in "ab"),
              f"a replica never served {NEW}", SWITCH_DEADLINE_S)
        switched = {r: min(x.done for x in traffic.seen(r, NEW)) for r in "ab"}
        n = len(traffic.answers)
        _wait(lambda: len(traffic.answers) >= n + 4, "traffic stopped after the switch", 60)

    failed = [x for x in traffic.answers if x.error] + [e for e in traffic.episodes if e.error]
    assert failed == [], failed
    assert len(traffic.answers) >= 10 and traffic.episodes
    for r in "ab":
        after = [x for x in traffic.answers if x.replica == r and x.sent > switched[r]]
        assert {x.version for x in after} <= {NEW}, f"replica {r} went back: {after}"
        assert switched[r] - flipped < SWITCH_DEADLINE_S, switched
    # every agent turn recorded, served by one version or the other, all ok
    stored = _stored_versions([t for e in traffic.episodes for t in e.turn_ids])
    assert stored and {v for v, _ in stored} <= {"base", NEW}
    assert {s for _, s in stored} == {"ok"}
