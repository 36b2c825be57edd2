"""The live watch: a promoted version that serves worse than the one it replaced is rolled back.

Turns and feedback are planted in a real store (SQLite and PostgreSQL), as
the recorder and the feedback route write them; versions are real adapters in
a real registry.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.database import Database
from store.feedback import FeedbackStore
from store.ids import new_id
from store.keys import KeyStore
from store.records import TurnRecord
from store.registry import Registry, served_base_dirs
from store.registry_check import base_fingerprint
from store.settings import ModelRoute, StoreSettings
from store.trajectories import TrajectoryStore
from tests.fakes.tiny_model import TEXT_PROMPT
from tests.proxy.local_helpers import client, start_local
from trainer.gate_config import WatchConfig
from trainer.rollback import LiveFigures, RollbackWatch, aliases_by_base, judge_live


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/store.db"
    url = os.environ.get("MOLT_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    return url  # each test plants under its own tenant, so runs never see each other's rows


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = await Database.open(StoreSettings(url=store_url))
    yield database
    await database.close()


class Plant:
    """Writes served turns and their feedback for one tenant."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.turns, self.feedback = TrajectoryStore(db), FeedbackStore(db)
        self.tenant_id = tenant_id

    async def __call__(self, version: str, scores: list[float | None], *, at: float | None = None,
                       model: str = "tiny", turn_type: str = "main", status: str = "ok",
                       source: str = "user", tenant_id: str | None = None,
                       on_session: bool = False) -> None:
        tenant_id = tenant_id or self.tenant_id
        recs = [TurnRecord(id=new_id("turn"), tenant_id=tenant_id, session_id=new_id("ses"),
                           idx=0, turn_type=turn_type, created_at=at or time.time(),
                           request_model=model, stream=False,
                           request={"model": model, "messages": []}, status=status,
                           weight_version=version) for _ in scores]
        await self.turns.write_turns(recs)
        for rec, score in zip(recs, scores, strict=True):
            if score is not None:
                await self.feedback.add(tenant_id=tenant_id, session_id=rec.session_id,
                                        turn_id=None if on_session else rec.id, score=score,
                                        text=None, source=source)


def _registry(tmp_path: Path, tenant: str, tiny_base: Path, arts: dict[str, Path]) -> Registry:
    reg = Registry(tmp_path / "registry")
    for i in (1, 2):
        reg.create(tenant, "tiny", kind="lora", files_from=arts[f"lora{i}"], base_model="tiny",
                   base_hash=base_fingerprint(tiny_base))
    return reg


async def _tenant(db: Database) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    return name, (await KeyStore(db).ensure_tenant(name)).id


def _watch(db: Database, reg: Registry, tiny_base: Path, cfg: WatchConfig) -> RollbackWatch:
    return RollbackWatch(db, reg, cfg, aliases={"tiny": ["tiny"]}, base_dirs={"tiny": tiny_base})


async def test_a_planted_regression_is_rolled_back(
    db: Database, tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    tenant, tid = await _tenant(db)
    other_tenant, other_tid = await _tenant(db)
    reg = _registry(tmp_path, tenant, tiny_base, tiny_artifacts)
    plant = Plant(db, tid)
    reg.promote(tenant, "tiny", "v0001", base_dir=tiny_base)
    # v1's live record: 9 of 10 turns good
    await plant("v0001", [1.0] * 9 + [-1.0], at=time.time() - 3600)
    reg.promote(tenant, "tiny", "v0002", base_dir=tiny_base, reason="eval gate: test")
    watch = _watch(db, reg, tiny_base, WatchConfig(min_samples=10))

    # Turns that are not v2's live record, all good: if any were read, v2 would look fine.
    await plant("v0002", [1.0] * 30, turn_type="replay")  # the gate's and evolver's replays
    await plant("v0002", [1.0] * 30, tenant_id=other_tid)  # another tenant's v0002
    await plant("v0002", [1.0] * 30, model="other-model")  # another base's v0002
    await plant("v0002", [1.0] * 30, at=time.time() - 7200)  # before the promotion
    await plant("v0002", [None] * 30)  # no evidence either way

    await plant("v0002", [-1.0] * 5, source="tool")  # tool errors seen in the next request
    d = await watch.check(tenant, "tiny")
    assert (d.action, d.active, d.previous) == ("wait", "v0002", "v0001")
    assert d.reason == "5 judged turns on v0002, 10 on v0001 (need 10 each)"
    assert reg.active(tenant, "tiny") == "v0002"

    await plant("v0002", [1.0, 1.0, 1.0, -1.0, -1.0])
    await plant("v0002", [1.0], model="tiny@v0002")  # pinned by the agent: still v2 serving it
    await plant("v0002", [None], status="upstream_error")  # failed in serving
    d = await watch.check(tenant, "tiny")
    assert d.action == "rollback"
    assert d.new == LiveFigures("v0002", 42, 12, 4, 8, -3 / 11)
    assert d.old is not None and (d.old.judged, d.old.rate) == (10, 0.9)
    assert d.reason == ("live success rate of v0002 0.333 (n=12) is below 0.900 of v0001 (n=10) "
                        "by more than 0.050")

    # serving follows the registry: v1 is active again, and the history says why
    assert reg.active(tenant, "tiny") == "v0001"
    last = reg.history(tenant, "tiny")[-1]
    assert (last["action"], last["from"], last["to"]) == ("rollback", "v0002", "v0001")
    assert last["reason"] == "live watch: " + d.reason
    meta = reg.get(tenant, "tiny", "v0002")
    assert meta.status == "rolled_back"
    assert meta.eval_gate is not None and meta.eval_gate["live"]["action"] == "rollback"
    assert meta.eval_gate["live"]["new"]["rate"] == pytest.approx(1 / 3)
    # a rollback is not watched: nothing flaps back
    assert (await watch.check(tenant, "tiny")).action == "idle"
    assert reg.active(tenant, "tiny") == "v0001"
    assert other_tenant not in reg.tenants()


async def test_no_regression_is_kept_and_recorded_once(
    db: Database, tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    tenant, tid = await _tenant(db)
    reg = _registry(tmp_path, tenant, tiny_base, tiny_artifacts)
    plant = Plant(db, tid)
    reg.promote(tenant, "tiny", "v0001", base_dir=tiny_base)
    await plant("v0001", [1.0] * 8 + [-1.0] * 2, at=time.time() - 60)
    reg.promote(tenant, "tiny", "v0002", base_dir=tiny_base)
    await plant("v0002", [1.0] * 7 + [-1.0] * 3)  # 0.7 vs 0.8: within a 0.1 allowance
    watch = _watch(db, reg, tiny_base, WatchConfig(min_samples=10, max_drop=0.1))
    d = await watch.check(tenant, "tiny")
    assert d.action == "keep" and reg.active(tenant, "tiny") == "v0002"
    recorded = reg.get(tenant, "tiny", "v0002").eval_gate
    assert recorded is not None and recorded["live"]["action"] == "keep"
    assert [x.action for x in await watch.check_all()] == ["keep"]
    assert reg.get(tenant, "tiny", "v0002").eval_gate == recorded  # written once, not per check
    # with no allowance the same figures roll back
    strict = _watch(db, reg, tiny_base, WatchConfig(min_samples=10, max_drop=0.0))
    d = await strict.check(tenant, "tiny")
    assert d.action == "rollback" and reg.active(tenant, "tiny") == "v0001"


async def test_a_version_that_replaced_the_base_weights_rolls_back_to_them(
    db: Database, tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    tenant, tid = await _tenant(db)
    reg = _registry(tmp_path, tenant, tiny_base, tiny_artifacts)
    plant = Plant(db, tid)
    await plant("base", [1.0] * 4, at=time.time() - 60)
    # session-level feedback counts for the session's turns that have none of their own
    await plant("base", [1.0] * 2, at=time.time() - 60, on_session=True)
    reg.promote(tenant, "tiny", "v0001", base_dir=tiny_base)
    await plant("v0001", [-1.0] * 3, on_session=True)
    await plant("v0001", [None] * 3, status="error")
    d = await _watch(db, reg, tiny_base, WatchConfig(min_samples=6)).check(tenant, "tiny")
    assert d.action == "rollback" and d.previous == "base"
    assert d.new is not None and (d.new.judged, d.new.failures, d.new.mean) == (6, 6, -1.0)
    assert reg.active(tenant, "tiny") is None
    last = reg.history(tenant, "tiny")[-1]
    assert (last["action"], last["from"], last["to"]) == ("rollback", "v0001", None)


def test_the_live_rule_on_figures() -> None:
    cfg = WatchConfig(min_samples=20, max_drop=0.05)
    old = LiveFigures("v0001", 100, 40, 32, 8, 0.6)  # rate 0.8

    def new(successes: int, judged: int = 40) -> LiveFigures:
        return LiveFigures("v0002", 100, judged, successes, judged - successes, None)

    assert judge_live(new(30), old, cfg)[0] == "keep"  # 0.75: a drop of 0.05 is not over 0.05
    assert judge_live(new(29), old, cfg)[0] == "rollback"
    assert judge_live(new(0, judged=19), old, cfg)[0] == "wait"
    assert judge_live(new(40), LiveFigures("v0001", 5, 5, 5, 0, 1.0), cfg)[0] == "wait"
    with pytest.raises(ValueError):
        WatchConfig(min_samples=0)


def test_the_watched_aliases_come_from_the_model_routes() -> None:
    routes = [ModelRoute(alias="tiny", local="/m/tiny"), ModelRoute(alias="fast", local="/m/tiny",
                                                                    upstream_model="tiny"),
              ModelRoute(alias="qwen", base_url="http://vllm:8000/v1", vllm=True,
                         upstream_model="Qwen/Qwen3-0.6B"),
              ModelRoute(alias="gpt", litellm="openai/gpt-4o")]
    assert aliases_by_base(routes) == {"tiny": ["tiny", "fast"], "Qwen--Qwen3-0.6B": ["qwen"]}


def test_a_regression_served_by_real_molt_is_rolled_back_without_a_failed_request(
    molt_factory: Any, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    """Turns served and recorded by molt, feedback through its API, the watch on its store."""
    m = start_local(molt_factory, tiny_base)
    reg = Registry(m.settings.registry_root())
    for i in (1, 2):
        reg.create("default", "tiny", kind="lora", files_from=tiny_artifacts[f"lora{i}"],
                   base_model="tiny", base_hash=base_fingerprint(tiny_base))
    api = httpx.Client(base_url=m.url, timeout=60)
    oai = client(m)

    def serve_and_rate(version: str, score: float, n: int) -> None:
        r = api.post(f"/admin/versions/default/tiny/{version}/promote")  # returns once swapped
        assert r.status_code == 200 and r.json()["served"] == {"tiny": version}, r.text
        for _ in range(n):
            raw = oai.chat.completions.with_raw_response.create(
                model="tiny", messages=TEXT_PROMPT, temperature=0, max_tokens=8)
            assert raw.headers["x-molt-weight-version"] == version
            fb = api.post("/v1/feedback", json={"turn_id": raw.headers["x-molt-turn-id"],
                                                "score": score})
            assert fb.status_code == 200, fb.text

    serve_and_rate("v0001", 1.0, 10)
    serve_and_rate("v0002", -1.0, 10)  # the planted regression

    back, stop = threading.Event(), threading.Event()
    seen: list[str] = []
    errors: list[str] = []

    def agent(i: int) -> None:
        c = client(m)
        while not stop.is_set():
            try:
                raw = c.chat.completions.with_raw_response.create(
                    model="tiny", messages=TEXT_PROMPT, temperature=0, max_tokens=8,
                    stream=bool(i % 2))
                parsed = raw.parse()
                if i % 2:
                    list(parsed)  # read the stream to its end
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                errors.append(repr(exc))
                continue
            seen.append(raw.headers["x-molt-weight-version"])
            if seen[-1] == "v0001":
                back.set()

    agents = [threading.Thread(target=agent, args=(i,)) for i in range(3)]
    for t in agents:
        t.start()
    try:
        watch = RollbackWatch(m.state.db, reg, WatchConfig(min_samples=10),
                              aliases=aliases_by_base(m.settings.models),
                              base_dirs=served_base_dirs(m.settings.models))
        d = m.run(watch.check("default", "tiny"))
        assert d.action == "rollback", d.reason
        assert back.wait(60), "serving never went back to v0001"
    finally:
        stop.set()
        for t in agents:
            t.join()
    assert errors == []
    assert d.new is not None and d.old is not None
    assert (d.new.judged, d.new.rate, d.old.judged, d.old.rate) == (10, 0.0, 10, 1.0)
    assert set(seen) <= {"v0001", "v0002"} and seen[-1] == "v0001"
    assert reg.active("default", "tiny") == "v0001"
    assert reg.get("default", "tiny", "v0002").status == "rolled_back"
