"""The scheduler, driven tick by tick with a fake clock and real turns in a real store.

Traffic is what the recorder writes (`TrajectoryStore.write_turns`); jobs are real
(tests/trainer/job_helpers.py: a counting body that checkpoints every step, the real
registry); nothing sleeps: the tests wait on the body's step counter or the job's task.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from store.database import Database
from store.keys import KeyStore
from store.registry import Registry
from store.settings import CronWindowSettings, StoreSettings, TrainerSettings
from store.training import TrainingStore
from tests.trainer.job_helpers import BASE, Clock, CountingBody, parts, write_turns
from trainer.schedule import Scheduler, triggers_from
from trainer.windows import CalendarTrigger, CronTrigger

IDLE_MIN = 10.0
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()  # a Monday


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/molt.db"))
    yield database
    await database.close()


def _scheduler(db: Database, tmp_path: Path, body: CountingBody, clock: Clock,
               settings: TrainerSettings, holder: str = "p1") -> Scheduler:
    store = TrainingStore(db)
    return Scheduler(store, parts(db, body, Registry(tmp_path / "registry")), settings,
                     jobs_dir=tmp_path / "jobs", triggers=triggers_from(settings, store),
                     clock=clock, holder=holder)


def _settings(**kw: object) -> TrainerSettings:
    base: dict[str, object] = {"idle_minutes": IDLE_MIN, "budget_minutes": 60,
                               "budget_steps": 1000, "quiet_minutes": 0}
    return TrainerSettings.model_validate({**base, **kw})


async def _run_window(s: Scheduler) -> str:
    """Tick once; the window that opened runs to its end; its job id."""
    await s.tick()
    (job_id,) = s.running()
    await s.wait(job_id)
    await s.tick()  # the ended window releases the lease
    return job_id


async def test_a_window_opens_when_the_tenant_has_been_idle(db: Database, tmp_path: Path) -> None:
    ten = await KeyStore(db).ensure_tenant("acme")
    clock = Clock(T0)
    await write_turns(db, ten.id, at=T0, n=8)
    body = CountingBody(total=3)
    s = _scheduler(db, tmp_path, body, clock, _settings())
    clock.advance(IDLE_MIN * 60 - 1)
    await s.tick()
    assert s.running() == [] and await s.store.open_job(ten.id) is None

    clock.advance(1)
    job_id = await _run_window(s)
    job = await s.store.get(job_id)
    assert (job.status, job.trigger, job.steps, job.windows) == ("succeeded", "idle", 3, 1)
    assert job.version == "v0001" and job.gate is not None and job.gate["promoted"] is True
    assert Registry(tmp_path / "registry").active("acme", BASE) == "v0001"
    kinds = [e.kind for e in await s.store.events(job_id)]
    assert kinds == ["queued", "started", "trained", "registered", "gated"]
    assert (await s.store.lease(ten.id)) is None

    # the same data is never trained twice: no new turns, no new job
    clock.advance(3600)
    await s.tick()
    assert s.running() == []
    # replays (the gate's own calls) are not traffic either
    await write_turns(db, ten.id, at=clock.now, turn_type="replay")
    clock.advance(IDLE_MIN * 60)
    await s.tick()
    assert s.running() == []
    # new agent turns, then quiet again: a new job on the new data
    await write_turns(db, ten.id, at=clock.now, n=2)
    clock.advance(IDLE_MIN * 60)
    second = await _run_window(s)
    assert second != job_id and (await s.store.get(second)).status == "succeeded"


async def test_a_cron_window_opens_on_its_schedule_and_closes_after_its_duration(
        db: Database, tmp_path: Path) -> None:
    night = datetime(2026, 3, 2, 1, 0, tzinfo=UTC).timestamp()
    cron = CronTrigger("0 1 * * *", minutes=120)
    assert cron.at(night - 1) is None
    w = cron.at(night + 3600)
    assert w is not None and (w.opened_at, w.closes_at) == (night, night + 7200)
    assert cron.at(night + 7200) is None
    with pytest.raises(ValueError, match="bad cron window"):
        CronTrigger("61 * * * *", minutes=5)

    ten = await KeyStore(db).ensure_tenant("acme")
    await write_turns(db, ten.id, at=night - 7200)
    clock = Clock(night - 60)
    body = CountingBody(total=100, permits=threading.Semaphore(0))
    settings = _settings(idle_minutes=None, quiet_minutes=30,
                         cron=[CronWindowSettings(cron="0 1 * * *", minutes=120)])
    s = _scheduler(db, tmp_path, body, clock, settings)
    await s.tick()
    assert s.running() == []
    clock.now = night
    await s.tick()
    (job_id,) = s.running()
    assert (await s.store.get(job_id)).trigger == "cron"
    assert body.permits is not None
    body.permits.release(2)
    assert await asyncio.to_thread(body.wait_step, 2)
    clock.now = night + 7200  # the window's end
    await s.tick()
    job = await s.wait(job_id)
    assert (job.status, job.stop_reason, job.steps) == ("paused", "window_closed", 2)


ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//molt tests//EN
BEGIN:VEVENT
UID:standup@example.com
DTSTAMP:20260301T000000Z
DTSTART:20260302T090000Z
DTEND:20260302T100000Z
RRULE:FREQ=DAILY;COUNT=5
EXDATE:20260304T090000Z
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:lunch@example.com
DTSTAMP:20260301T000000Z
DTSTART:20260302T123000Z
DTEND:20260302T131500Z
SUMMARY:Lunch
END:VEVENT
BEGIN:VEVENT
UID:train@example.com
DTSTAMP:20260301T000000Z
DTSTART:20260302T200000Z
DTEND:20260302T230000Z
SUMMARY:molt-training (nightly)
TRANSP:TRANSPARENT
END:VEVENT
END:VCALENDAR
"""


def _utc(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC).timestamp()


async def test_calendar_slots_open_windows(db: Database, tmp_path: Path) -> None:
    ics = tmp_path / "team.ics"
    ics.write_text(ICS)
    events = CalendarTrigger(ics, mode="events")
    assert events.at(_utc(2, 19, 59)) is None
    w = events.at(_utc(2, 21))
    assert w is not None and (w.opened_at, w.closes_at) == (_utc(2, 20), _utc(2, 23))
    assert w.detail == "molt-training (nightly)"

    free = CalendarTrigger(ics, mode="free", min_minutes=90)
    assert free.at(_utc(3, 9, 30)) is None  # inside the (recurring) standup
    gap = free.at(_utc(2, 11))
    assert gap is not None and (gap.opened_at, gap.closes_at) == (_utc(2, 10), _utc(2, 12, 30))
    assert free.at(_utc(2, 13, 30)) is not None  # lunch to the next day's standup
    # 10:00-12:30 is 150 minutes: too short for a 3-hour minimum
    assert CalendarTrigger(ics, mode="free", min_minutes=180).at(_utc(2, 11)) is None
    # the standup of the 4th is excluded (EXDATE): that morning is free
    assert free.at(_utc(4, 9, 30)) is not None
    # a changed file is read again
    ics.write_text(ICS.replace("molt-training (nightly)", "Dinner"))
    assert events.at(_utc(2, 21)) is None
    ics.write_text(ICS)

    ten = await KeyStore(db).ensure_tenant("acme")
    await write_turns(db, ten.id, at=_utc(2, 8))
    clock = Clock(_utc(2, 19))
    s = _scheduler(db, tmp_path, CountingBody(total=2), clock,
                   _settings(idle_minutes=None, calendar=str(ics)))
    await s.tick()
    assert s.running() == []
    clock.now = _utc(2, 20, 5)
    job = await s.store.get(await _run_window(s))
    assert (job.status, job.trigger) == ("succeeded", "calendar")


async def test_returning_traffic_pauses_the_job_which_resumes_from_its_checkpoint(
        db: Database, tmp_path: Path) -> None:
    ten = await KeyStore(db).ensure_tenant("acme")
    clock = Clock(T0)
    await write_turns(db, ten.id, at=T0, n=4)
    permits = threading.Semaphore(0)
    body = CountingBody(total=5, permits=permits)
    s = _scheduler(db, tmp_path, body, clock, _settings())
    clock.advance(IDLE_MIN * 60)
    await s.tick()
    (job_id,) = s.running()
    permits.release(3)
    assert await asyncio.to_thread(body.wait_step, 3)

    clock.advance(30)
    await s.tick()  # no traffic yet: still running, progress recorded
    assert s.running() == [job_id] and (await s.store.get(job_id)).steps == 3

    # the agent is back
    await write_turns(db, ten.id, at=clock.now)
    clock.advance(2)
    await s.tick()
    job = await s.wait(job_id)
    assert (job.status, job.stop_reason, job.steps) == ("paused", "traffic", 3)
    assert job.checkpoint is not None
    assert json.loads(Path(job.checkpoint).read_text()) == {"step": 3}
    await s.tick()
    assert s.running() == [] and (await s.store.lease(ten.id)) is None

    # busy: nothing resumes; quiet for the idle time: it resumes from step 3
    clock.advance(IDLE_MIN * 60 - 5)
    await s.tick()
    assert s.running() == []
    clock.advance(10)
    await s.tick()
    assert s.running() == [job_id]
    permits.release(2)
    job = await s.wait(job_id)
    assert (job.status, job.steps, job.windows) == ("succeeded", 5, 2)
    assert body.resumed_from == [None, Path(job.checkpoint or "")]
    assert body.resumed_from[1] is not None and body.resumed_from[1].name == "checkpoint-3.json"
    kinds = [e.kind for e in await s.store.events(job_id)]
    assert kinds == ["queued", "started", "paused", "resumed", "trained", "registered", "gated"]


async def test_a_window_ends_when_its_step_budget_is_spent(db: Database, tmp_path: Path) -> None:
    ten = await KeyStore(db).ensure_tenant("acme")
    clock = Clock(T0)
    await write_turns(db, ten.id, at=T0)
    body = CountingBody(total=5)
    s = _scheduler(db, tmp_path, body, clock, _settings(budget_steps=3))
    clock.advance(IDLE_MIN * 60)
    job_id = await _run_window(s)
    job = await s.store.get(job_id)
    assert (job.status, job.stop_reason, job.steps) == ("paused", "budget_steps", 3)
    # the same idle window is spent: the job waits for the next one
    clock.advance(600)
    await s.tick()
    assert s.running() == []
    await write_turns(db, ten.id, at=clock.now)
    clock.advance(IDLE_MIN * 60)
    assert await _run_window(s) == job_id
    job = await s.store.get(job_id)
    assert (job.status, job.steps, job.windows) == ("succeeded", 5, 2)
    # the data was frozen at the first window: the new turn is not in this job
    assert body.train_sizes == [1, 1]


async def test_cancel_from_another_process_stops_the_running_job(db: Database,
                                                                 tmp_path: Path) -> None:
    ten = await KeyStore(db).ensure_tenant("acme")
    clock = Clock(T0)
    await write_turns(db, ten.id, at=T0)
    permits = threading.Semaphore(0)
    body = CountingBody(total=10, permits=permits)
    s = _scheduler(db, tmp_path, body, clock, _settings())
    clock.advance(IDLE_MIN * 60)
    await s.tick()
    (job_id,) = s.running()
    permits.release(1)
    assert await asyncio.to_thread(body.wait_step, 1)

    other = await Database.open(StoreSettings(url=db.url))
    try:
        asked = await TrainingStore(other).request_cancel(job_id, now=clock.now)
    finally:
        await other.close()
    assert asked.status == "running" and asked.cancel_requested
    await s.tick()
    job = await s.wait(job_id)
    assert (job.status, job.stop_reason, job.steps) == ("cancelled", "cancelled", 1)
    assert job.finished_at is not None


async def _two_processes(db: Database, other_db: Database, tmp_path: Path,
                         tenant: str) -> None:
    ten = await KeyStore(db).ensure_tenant(tenant)
    clock = Clock(T0)
    await write_turns(db, ten.id, at=T0)
    permits = threading.Semaphore(0)
    body = CountingBody(total=4, permits=permits)
    settings = _settings(lease_ttl_s=30, tenants=[tenant])
    first = _scheduler(db, tmp_path, body, clock, settings, holder="proc-a")
    second = _scheduler(other_db, tmp_path, body, clock, settings, holder="proc-b")
    clock.advance(IDLE_MIN * 60)
    await asyncio.gather(first.tick(), second.tick())
    running = first.running() + second.running()
    assert len(running) == 1
    owner, idle = (first, second) if first.running() else (second, first)
    lease = await idle.store.lease(ten.id)
    assert lease is not None and lease.holder == owner.holder and lease.job_id == running[0]

    # while the owner renews its lease, the other never takes over, even long after
    # the lease's first expiry
    for _ in range(4):
        clock.advance(20)
        await owner.tick()
        await idle.tick()
        assert idle.running() == []
    permits.release(4)
    job = await owner.wait(running[0])
    assert job.status == "succeeded" and body.max_running == 1
    await owner.tick()
    assert (await idle.store.lease(ten.id)) is None


async def test_two_processes_never_train_the_same_tenant(db: Database, tmp_path: Path) -> None:
    other_db = await Database.open(StoreSettings(url=db.url))
    try:
        await _two_processes(db, other_db, tmp_path, "acme")
    finally:
        await other_db.close()


@pytest.mark.postgres
async def test_two_processes_never_train_the_same_tenant_on_postgresql(tmp_path: Path) -> None:
    url = os.environ.get("MOLT_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    a = await Database.open(StoreSettings(url=url))
    b = await Database.open(StoreSettings(url=url))
    try:  # the shared database is not reset: a tenant of its own
        await _two_processes(a, b, tmp_path, f"sched-{uuid.uuid4().hex[:12]}")
    finally:
        await a.close()
        await b.close()


async def test_a_window_ends_when_its_minutes_are_spent(db: Database, tmp_path: Path) -> None:
    ten = await KeyStore(db).ensure_tenant("acme")
    clock = Clock(T0)
    await write_turns(db, ten.id, at=T0)
    permits = threading.Semaphore(0)
    body = CountingBody(total=10, permits=permits)
    s = _scheduler(db, tmp_path, body, clock, _settings(budget_minutes=1))
    clock.advance(IDLE_MIN * 60)
    await s.tick()
    (job_id,) = s.running()
    permits.release(1)
    assert await asyncio.to_thread(body.wait_step, 1)
    clock.advance(59)
    await s.tick()
    assert s.running() == [job_id]
    clock.advance(1)
    await s.tick()
    job = await s.wait(job_id)
    assert (job.status, job.stop_reason, job.steps) == ("paused", "budget_minutes", 1)


async def test_a_dead_holders_job_is_taken_over_after_its_lease_expires(
        db: Database, tmp_path: Path) -> None:
    ten = await KeyStore(db).ensure_tenant("acme")
    quiet_since = T0 - IDLE_MIN * 60
    await write_turns(db, ten.id, at=quiet_since)
    settings = _settings(lease_ttl_s=30)
    store = TrainingStore(db)
    # what a process that died mid-window leaves: a running job with a checkpoint, a lease
    job, _ = await store.create_job(ten.id, "acme", trigger="idle", now=T0,
                                    data_until=quiet_since + 1)
    ckpt = tmp_path / "jobs" / job.id / "checkpoints" / "checkpoint-2.json"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text(json.dumps({"step": 2}))
    await store.update(job.id, now=T0, status="running", steps=2, checkpoint=str(ckpt),
                       windows=1, work_dir=str(ckpt.parent.parent), holder="dead")
    assert await store.acquire(ten.id, "dead", ttl_s=30, now=T0, job_id=job.id)

    body = CountingBody(total=3)
    clock = Clock(T0 + 20)  # idle, but the dead holder's lease is still live
    s = _scheduler(db, tmp_path, body, clock, settings, holder="alive")
    await s.tick()
    assert s.running() == []
    clock.now = T0 + 31
    assert await _run_window(s) == job.id
    done = await store.get(job.id)
    assert (done.status, done.steps, done.holder, done.windows) == ("succeeded", 3, "alive", 2)
    assert body.resumed_from == [ckpt]
