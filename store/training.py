"""What the slow loop keeps: training jobs, their history, and one lease per tenant.

Guarantees:
- At most one unfinished job (queued, running or paused) per tenant: a partial unique
  index says so, so two processes asking at once get the same job, never two.
- At most one live lease per tenant. `acquire` is one conditional UPDATE (take the row
  if it expired or is already ours), else one INSERT that the primary key lets only one
  writer win; on SQLite and PostgreSQL alike a second process cannot take a live lease.
  A holder renews its lease every scheduler tick; one that died loses it after the TTL.
- Every state change of a job is also an event row (`training_events`), so `history`
  shows what was decided and when, across windows and processes.
- Times come from the caller (`now`), so tests drive the clock.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from store import tables as t
from store.database import Database
from store.errors import Conflict, InvalidInput, NotFound
from store.ids import new_id

JOB_STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
OPEN_STATUSES = ("queued", "running", "paused")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
# Turns that are not agent traffic: the evolver's and the eval gate's own calls.
NOT_TRAFFIC = ("replay",)
_PROGRESS_TRIES = 20

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TrainingJob:
    id: str
    tenant_id: str
    tenant: str
    status: str
    trigger: str
    created_at: float
    updated_at: float
    data_until: float
    steps: int
    windows: int
    cancel_requested: bool
    started_at: float | None = None
    finished_at: float | None = None
    budget_minutes: float | None = None
    budget_steps: int | None = None
    work_dir: str | None = None
    checkpoint: str | None = None
    holder: str | None = None
    stop_reason: str | None = None
    # "<trigger>:<opened_at>" of the last window the job ran in
    last_window: str | None = None
    version: str | None = None
    metrics: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    error: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class TrainingEvent:
    id: str
    job_id: str
    tenant_id: str
    at: float
    kind: str
    detail: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Lease:
    tenant_id: str
    holder: str
    job_id: str | None
    acquired_at: float
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now


def _job(row: Any) -> TrainingJob:
    data = dict(row)
    data["cancel_requested"] = bool(data["cancel_requested"])
    return TrainingJob(**data)


class TrainingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- leases --------------------------------------------------------------
    async def acquire(self, tenant_id: str, holder: str, *, ttl_s: float, now: float,
                      job_id: str | None = None) -> bool:
        """Take the tenant's lease if it is free, expired, or already `holder`'s."""
        lk = t.training_leases.c
        async with self.db.engine.begin() as conn:
            res = await conn.execute(
                t.training_leases.update()
                .where(lk.tenant_id == tenant_id, sa.or_(lk.expires_at <= now, lk.holder == holder))
                .values(holder=holder, job_id=job_id, acquired_at=now, expires_at=now + ttl_s)
            )
            if res.rowcount:
                return True
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(t.training_leases.insert().values(
                    tenant_id=tenant_id, holder=holder, job_id=job_id, acquired_at=now,
                    expires_at=now + ttl_s))
            return True
        except IntegrityError:
            return False

    async def renew(self, tenant_id: str, holder: str, *, ttl_s: float, now: float) -> bool:
        """Extend `holder`'s lease; False when it is no longer `holder`'s (it expired and
        another process took it)."""
        lk = t.training_leases.c
        async with self.db.engine.begin() as conn:
            res = await conn.execute(
                t.training_leases.update()
                .where(lk.tenant_id == tenant_id, lk.holder == holder)
                .values(expires_at=now + ttl_s)
            )
        return bool(res.rowcount)

    async def release(self, tenant_id: str, holder: str) -> None:
        lk = t.training_leases.c
        async with self.db.engine.begin() as conn:
            await conn.execute(
                t.training_leases.delete().where(lk.tenant_id == tenant_id, lk.holder == holder)
            )

    async def lease(self, tenant_id: str) -> Lease | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.training_leases).where(
                t.training_leases.c.tenant_id == tenant_id))).mappings().first()
        return Lease(**dict(row)) if row else None

    # -- jobs ----------------------------------------------------------------
    async def create_job(self, tenant_id: str, tenant: str, *, trigger: str, now: float,
                         data_until: float, budget_minutes: float | None = None,
                         budget_steps: int | None = None) -> tuple[TrainingJob, bool]:
        """A new queued job, or the tenant's unfinished one: (job, created)."""
        job = TrainingJob(
            id=new_id("job"), tenant_id=tenant_id, tenant=tenant, status="queued",
            trigger=trigger, created_at=now, updated_at=now, data_until=data_until, steps=0,
            windows=0, cancel_requested=False, budget_minutes=budget_minutes,
            budget_steps=budget_steps,
        )
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(t.training_jobs.insert().values(**job.to_dict()))
                await conn.execute(t.training_events.insert().values(
                    id=new_id("tev"), job_id=job.id, tenant_id=tenant_id, at=now, kind="queued",
                    detail={"trigger": trigger, "budget_minutes": budget_minutes,
                            "budget_steps": budget_steps}))
        except IntegrityError:
            existing = await self.open_job(tenant_id)
            if existing is None:  # it finished between our insert and this read
                raise Conflict(f"tenant {tenant!r}: a job was created concurrently") from None
            return existing, False
        return job, True

    async def get(self, job_id: str) -> TrainingJob:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.training_jobs).where(
                t.training_jobs.c.id == job_id))).mappings().first()
        if row is None:
            raise NotFound(f"no training job {job_id!r}")
        return _job(row)

    async def update(self, job_id: str, *, now: float, event: str | None = None,
                     detail: dict[str, Any] | None = None, **values: Any) -> None:
        """Change a job's columns; with `event`, record that event in the same transaction."""
        if "status" in values and values["status"] not in JOB_STATUSES:
            raise InvalidInput(f"unknown job status {values['status']!r}")
        async with self.db.engine.begin() as conn:
            res = await conn.execute(t.training_jobs.update().where(
                t.training_jobs.c.id == job_id).values(updated_at=_later(now), **values))
            if not res.rowcount:
                raise NotFound(f"no training job {job_id!r}")
            if event is not None:
                tenant_id = (await conn.execute(sa.select(t.training_jobs.c.tenant_id).where(
                    t.training_jobs.c.id == job_id))).scalar_one()
                await conn.execute(t.training_events.insert().values(
                    id=new_id("tev"), job_id=job_id, tenant_id=tenant_id, at=now, kind=event,
                    detail=detail))

    async def progress(self, job_id: str, *, now: float, steps: int,
                       metrics: dict[str, float]) -> None:
        """Record a running job's progress: steps only grow, metrics merge over the stored ones.

        A compare-and-set on `updated_at`: the write applies only if nobody wrote the job
        since it was read (else it reads again), so progress never overwrites what the
        job's runner wrote meanwhile (its final metrics, say). A plain read-then-write
        transaction is not enough: SQLite's driver begins the transaction at the write.
        """
        j = t.training_jobs.c
        for _ in range(_PROGRESS_TRIES):
            async with self.db.engine.begin() as conn:
                row = (await conn.execute(sa.select(j.steps, j.metrics, j.updated_at).where(
                    j.id == job_id))).first()
                if row is None:
                    raise NotFound(f"no training job {job_id!r}")
                merged = {**dict(row[1] or {}), **metrics}
                res = await conn.execute(t.training_jobs.update().where(
                    j.id == job_id, j.updated_at == row[2]).values(
                    updated_at=_later(now),
                    steps=max(int(row[0] or 0), steps), metrics=merged or None))
                if res.rowcount:
                    return
        log.warning("training job %s: progress not recorded (the job kept changing)", job_id)

    async def open_job(self, tenant_id: str) -> TrainingJob | None:
        """The tenant's unfinished job (queued, running or paused), if any."""
        j = t.training_jobs.c
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.training_jobs).where(
                j.tenant_id == tenant_id, j.status.in_(OPEN_STATUSES)))).mappings().first()
        return _job(row) if row else None

    async def last_finished(self, tenant_id: str) -> TrainingJob | None:
        j = t.training_jobs.c
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(t.training_jobs)
                .where(j.tenant_id == tenant_id, j.status.in_(FINAL_STATUSES))
                .order_by(j.created_at.desc()).limit(1))).mappings().first()
        return _job(row) if row else None

    async def jobs(self, *, tenant_id: str | None = None, statuses: tuple[str, ...] = (),
                   limit: int = 50) -> list[TrainingJob]:
        """Jobs, newest first."""
        j = t.training_jobs.c
        stmt = sa.select(t.training_jobs)
        if tenant_id is not None:
            stmt = stmt.where(j.tenant_id == tenant_id)
        if statuses:
            stmt = stmt.where(j.status.in_(statuses))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(
                stmt.order_by(j.created_at.desc(), j.id.desc()).limit(limit))).mappings().all()
        return [_job(r) for r in rows]

    async def request_cancel(self, job_id: str, *, now: float) -> TrainingJob:
        """Cancel a job. One that runs under a live lease is asked to stop (its holder
        stops it at its next tick); any other unfinished one is cancelled at once."""
        job = await self.get(job_id)
        if not job.is_open:
            raise Conflict(f"training job {job_id} is already {job.status}")
        lease = await self.lease(job.tenant_id)
        running_live = (job.status == "running" and lease is not None and lease.live(now)
                        and lease.job_id == job.id)
        if running_live:
            await self.update(job_id, now=now, cancel_requested=True, event="cancel_requested")
        else:
            await self.update(job_id, now=now, status="cancelled", finished_at=now,
                              cancel_requested=True, stop_reason="cancelled", event="cancelled")
        return await self.get(job_id)

    # -- tenants -------------------------------------------------------------
    async def tenants(self) -> list[tuple[str, str]]:
        """(id, name) of every tenant."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.tenants.c.id, t.tenants.c.name)
                                       .order_by(t.tenants.c.name))).all()
        return [(str(r[0]), str(r[1])) for r in rows]

    async def tenant_id(self, name: str) -> str | None:
        async with self.db.engine.connect() as conn:
            v = (await conn.execute(sa.select(t.tenants.c.id).where(
                t.tenants.c.name == name))).scalar_one_or_none()
        return None if v is None else str(v)

    # -- history -------------------------------------------------------------
    async def add_event(self, job_id: str, tenant_id: str, kind: str, *, now: float,
                        detail: dict[str, Any] | None = None) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(t.training_events.insert().values(
                id=new_id("tev"), job_id=job_id, tenant_id=tenant_id, at=now, kind=kind,
                detail=detail))

    async def events(self, job_id: str) -> list[TrainingEvent]:
        e = t.training_events.c
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.training_events).where(
                e.job_id == job_id).order_by(e.at, e.id))).mappings().all()
        return [TrainingEvent(**dict(r)) for r in rows]

    # -- the idle signal -----------------------------------------------------
    async def last_traffic_at(self, tenant_id: str) -> float:
        """When the tenant's newest agent turn was recorded (0 if none); the evolver's and
        the eval gate's replays are not traffic."""
        tc = t.turns.c
        async with self.db.engine.connect() as conn:
            v = (await conn.execute(sa.select(sa.func.max(tc.created_at)).where(
                tc.tenant_id == tenant_id, tc.turn_type.not_in(NOT_TRAFFIC)))).scalar_one_or_none()
        return float(v or 0.0)


def _later(now: float) -> Any:
    """`updated_at` for a write: `now`, or just after the stored value when that is not
    earlier (a fake clock repeats itself), so that every write changes it and
    `TrainingStore.progress`'s compare-and-set sees the write."""
    col = t.training_jobs.c.updated_at
    return sa.case((col >= now, col + 1e-6), else_=now)
