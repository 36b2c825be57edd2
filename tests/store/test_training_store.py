"""Training jobs and leases, on SQLite and on a real PostgreSQL server.

Two `Database` instances on one database stand for two processes. On PostgreSQL the
tests do not reset the shared schema: each uses its own tenant ids.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.database import Database
from store.errors import Conflict, InvalidInput, NotFound
from store.ids import new_id
from store.records import TurnRecord
from store.settings import StoreSettings
from store.training import TrainingStore
from store.trajectories import TrajectoryStore

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/store.db"
    pg = os.environ.get("MOLT_TEST_PG_URL")
    if not pg:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    return pg


@pytest.fixture
async def two(url: str) -> AsyncIterator[tuple[TrainingStore, TrainingStore]]:
    a = await Database.open(StoreSettings(url=url))
    b = await Database.open(StoreSettings(url=url))
    yield TrainingStore(a), TrainingStore(b)
    await a.close()
    await b.close()


async def test_a_live_lease_belongs_to_one_process(two: tuple[TrainingStore, TrainingStore]) -> None:
    a, b = two
    tid = new_id("ten")
    assert await a.acquire(tid, "proc-a", ttl_s=30, now=NOW, job_id="job_1")
    assert not await b.acquire(tid, "proc-b", ttl_s=30, now=NOW + 1)
    assert await a.acquire(tid, "proc-a", ttl_s=30, now=NOW + 2)  # re-entrant for its holder
    assert await a.renew(tid, "proc-a", ttl_s=30, now=NOW + 20)
    assert not await b.acquire(tid, "proc-b", ttl_s=30, now=NOW + 49)  # renewed to NOW + 50
    assert not await b.renew(tid, "proc-b", ttl_s=30, now=NOW + 49)
    lease = await b.lease(tid)
    assert lease is not None and lease.holder == "proc-a" and lease.live(NOW + 49)

    # the holder stopped renewing (it died): after the TTL another process takes over
    assert await b.acquire(tid, "proc-b", ttl_s=30, now=NOW + 50, job_id="job_1")
    assert not await a.renew(tid, "proc-a", ttl_s=30, now=NOW + 51)
    await a.release(tid, "proc-a")  # not a's any more: nothing happens
    lease = await a.lease(tid)
    assert lease is not None and lease.holder == "proc-b"
    await b.release(tid, "proc-b")
    assert await a.lease(tid) is None


async def test_concurrent_acquires_have_one_winner(two: tuple[TrainingStore, TrainingStore]) -> None:
    a, b = two
    for _ in range(3):
        tid = new_id("ten")
        stores = [a, b] * 6
        got = await asyncio.gather(*(s.acquire(tid, f"proc-{i}", ttl_s=30, now=NOW)
                                     for i, s in enumerate(stores)))
        assert sum(got) == 1


async def test_one_unfinished_job_per_tenant(two: tuple[TrainingStore, TrainingStore]) -> None:
    a, b = two
    tid = new_id("ten")
    first, created = await a.create_job(tid, "acme", trigger="idle", now=NOW, data_until=NOW)
    assert created and first.status == "queued"
    again, created = await b.create_job(tid, "acme", trigger="manual", now=NOW + 1,
                                        data_until=NOW)
    assert not created and again.id == first.id
    both = await asyncio.gather(*(s.create_job(new_tid, "x", trigger="idle", now=NOW,
                                               data_until=NOW)
                                  for new_tid in [new_id("ten")] for s in (a, b)))
    assert len({j.id for j, _ in both}) == 1

    await a.update(first.id, now=NOW + 5, status="succeeded", finished_at=NOW + 5,
                   event="succeeded")
    assert await a.open_job(tid) is None
    assert (await b.last_finished(tid)) is not None
    later, created = await b.create_job(tid, "acme", trigger="cron", now=NOW + 6,
                                        data_until=NOW + 6)
    assert created and later.id != first.id
    assert [j.id for j in await a.jobs(tenant_id=tid)] == [later.id, first.id]
    with pytest.raises(InvalidInput):
        await a.update(later.id, now=NOW, status="sleeping")
    with pytest.raises(NotFound):
        await a.get("job_nope")


async def test_cancel(two: tuple[TrainingStore, TrainingStore]) -> None:
    a, b = two
    tid = new_id("ten")
    job, _ = await a.create_job(tid, "acme", trigger="manual", now=NOW, data_until=NOW)
    # running under a live lease: its holder is asked to stop
    assert await a.acquire(tid, "proc-a", ttl_s=30, now=NOW, job_id=job.id)
    await a.update(job.id, now=NOW, status="running", holder="proc-a", event="started")
    asked = await b.request_cancel(job.id, now=NOW + 1)
    assert (asked.status, asked.cancel_requested) == ("running", True)
    # the holder died: cancelled at once
    dead = await b.request_cancel(job.id, now=NOW + 60)
    assert (dead.status, dead.stop_reason) == ("cancelled", "cancelled")
    with pytest.raises(Conflict):
        await b.request_cancel(job.id, now=NOW + 61)
    assert [e.kind for e in await a.events(job.id)] == [
        "queued", "started", "cancel_requested", "cancelled"]


async def test_progress_never_overwrites_the_runners_final_metrics(
        two: tuple[TrainingStore, TrainingStore]) -> None:
    """The scheduler's progress writes race the runner's final write; the final
    metrics (KL, say) must survive every interleaving, also on a clock that repeats."""
    a, b = two
    tid = new_id("ten")
    job, _ = await a.create_job(tid, "acme", trigger="manual", now=NOW, data_until=NOW)
    for i in range(25):
        final = {"reward": 1.0, "kl": 0.01 * i}
        await asyncio.gather(
            *(b.progress(job.id, now=NOW, steps=i, metrics={"reward": 0.5}) for _ in range(3)),
            a.update(job.id, now=NOW, steps=i, metrics=final, event="trained"))
        stored = (await a.get(job.id)).metrics
        assert stored["kl"] == final["kl"], (i, stored)
    await b.progress(job.id, now=NOW, steps=3, metrics={"loss": 0.2})
    got = await a.get(job.id)
    assert got.steps == 24  # steps only grow
    assert (got.metrics["kl"], got.metrics["loss"]) == (0.24, 0.2)


async def test_replays_are_not_traffic(two: tuple[TrainingStore, TrainingStore]) -> None:
    a, _ = two
    tid = new_id("ten")
    assert await a.last_traffic_at(tid) == 0.0

    def rec(at: float, turn_type: str) -> TurnRecord:
        return TurnRecord(id=new_id("turn"), tenant_id=tid, session_id=new_id("ses"), idx=0,
                          turn_type=turn_type, created_at=at, request_model="m", stream=False,
                          request={"model": "m", "messages": []})

    await TrajectoryStore(a.db).write_turns([rec(NOW, "main"), rec(NOW + 5, "side"),
                                             rec(NOW + 9, "replay")])
    assert await a.last_traffic_at(tid) == NOW + 5
