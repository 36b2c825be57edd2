"""The scheduler: opens training windows per tenant and runs one job at a time in each.

Everything happens in `tick()`, which the service calls every `tick_s` (APScheduler in
`molt serve`) and tests call directly with a fake clock. A tick:

1. supervises this process's running windows: the job's progress goes to the store;
   the run is told to stop when the job's cancel was requested (from any process),
   its window closed, its budget of minutes is spent, its lease was lost, or, in a
   window that yields to traffic, an agent turn was recorded after the run started.
   The body then checkpoints at its next step and the job is `paused`, to resume from
   that checkpoint in a later window. A finished window releases the lease.
2. for each other tenant, finds an open window: a queued manual job (`request`, i.e.
   `molt train now`: its own window of `minutes`, not paused by traffic), else the
   first configured trigger that holds (trainer/windows.py). In a cron or calendar
   window the tenant must also have been quiet for `quiet_minutes`. The job is the
   tenant's unfinished one (paused, or running under a lease that expired: its holder
   died), else a new one, but only if agent turns arrived after the last finished
   job's data (so a window never retrains on the same data twice).
   A window whose budget a job already spent is not entered again by that job.
3. takes the tenant's lease in the store (store/training.py) before starting: two
   processes never run the same tenant's job at once.

The clock (`clock`) and the traffic signal (`activity`) are injected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from store.errors import Conflict, InvalidInput, NotFound
from store.settings import TrainerSettings
from store.training import TrainingJob, TrainingStore
from trainer.jobs import Budget, Control, JobParts, JobRunner
from trainer.windows import (
    Activity,
    CalendarTrigger,
    CronTrigger,
    IdleTrigger,
    Trigger,
    Window,
)

log = logging.getLogger("molt.trainer.schedule")

# Reasons a window ends for good: the job waits for the next window.
SPENT = ("budget_minutes", "budget_steps")


def triggers_from(settings: TrainerSettings, activity: Activity) -> list[Trigger]:
    """The configured triggers, in the order they are asked (idle, cron, calendar)."""
    out: list[Trigger] = []
    if settings.idle_minutes is not None:
        out.append(IdleTrigger(activity, settings.idle_minutes * 60.0))
    for c in settings.cron:
        out.append(CronTrigger(c.cron, c.minutes, c.timezone))
    if settings.calendar is not None:
        out.append(CalendarTrigger(settings.calendar, mode=settings.calendar_mode,
                                   marker=settings.calendar_marker,
                                   min_minutes=settings.calendar_min_minutes,
                                   timezone=settings.calendar_timezone))
    return out


def new_holder() -> str:
    """A lease holder name unique to this process (host, pid, random)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class _Active:
    job_id: str
    tenant_id: str
    window: Window
    budget: Budget
    started: float  # when this window's run started (clock)
    control: Control
    task: asyncio.Task[TrainingJob]


class Scheduler:
    def __init__(
        self, store: TrainingStore, parts: JobParts, settings: TrainerSettings, *,
        jobs_dir: Path, activity: Activity | None = None, triggers: Sequence[Trigger] = (),
        clock: Callable[[], float] = time.time, holder: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.activity: Activity = activity if activity is not None else store
        self.triggers = list(triggers)
        self.clock = clock
        self.holder = holder or new_holder()
        self.runner = JobRunner(store, parts, jobs_dir, clock)
        self._active: dict[str, _Active] = {}
        self._tick_lock = asyncio.Lock()

    # -- what the CLI and the API call --------------------------------------
    async def request(self, tenant: str, *, minutes: float | None = None,
                      steps: int | None = None) -> TrainingJob:
        """Queue a job for `tenant` now (`molt train now`); the next tick starts it.

        A paused job is resumed in this window rather than starting over; a running
        one is a Conflict.
        """
        found = await self.store.tenant_id(tenant)
        if found is None:
            raise NotFound(f"no tenant {tenant!r}")
        if minutes is not None and minutes <= 0:
            raise InvalidInput("minutes must be positive")
        if steps is not None and steps < 1:
            raise InvalidInput("steps must be at least 1")
        now = self.clock()
        job = await self.store.open_job(found)
        lease = await self.store.lease(found)
        live = lease is not None and lease.live(now) and lease.job_id == (job.id if job else None)
        if job is not None and job.status == "running" and live:
            raise Conflict(f"tenant {tenant!r} is already training (job {job.id})")
        if job is not None:
            await self.store.update(job.id, now=now, status="queued", trigger="manual",
                                    budget_minutes=minutes, budget_steps=steps,
                                    event="requested",
                                    detail={"budget_minutes": minutes, "budget_steps": steps})
            return await self.store.get(job.id)
        until = await self.activity.last_traffic_at(found)
        job, _ = await self.store.create_job(found, tenant, trigger="manual", now=now,
                                             data_until=until, budget_minutes=minutes,
                                             budget_steps=steps)
        return job

    def running(self) -> list[str]:
        """Ids of the jobs this process is running now."""
        return [a.job_id for a in self._active.values() if not a.task.done()]

    async def wait(self, job_id: str) -> TrainingJob:
        """Wait until this process's window of `job_id` ends (tests; shutdown)."""
        for a in list(self._active.values()):
            if a.job_id == job_id:
                await asyncio.shield(a.task)
        return await self.store.get(job_id)

    async def shutdown(self) -> None:
        """Stop every running window (each checkpoints and pauses) and release leases."""
        for a in self._active.values():
            a.control.stop("shutdown")
        if self._active:
            await asyncio.gather(*(a.task for a in self._active.values()),
                                 return_exceptions=True)
        for tid in list(self._active):
            await self.store.release(tid, self.holder)
        self._active.clear()

    # -- the tick ------------------------------------------------------------
    async def tick(self) -> None:
        async with self._tick_lock:
            now = self.clock()
            for tid, active in list(self._active.items()):
                if active.task.done():
                    await self._finish(tid, active)
                else:
                    await self._supervise(active, now)
            for tid, name in await self._tenants():
                if tid not in self._active:
                    await self._maybe_start(tid, name, now)

    async def _tenants(self) -> list[tuple[str, str]]:
        if not self.triggers:
            # nothing opens windows on its own: only manual requests
            return [(j.tenant_id, j.tenant)
                    for j in await self.store.jobs(statuses=("queued",), limit=1000)
                    if j.trigger == "manual"]
        everyone = await self.store.tenants()
        if not self.settings.tenants:
            return everyone
        wanted = set(self.settings.tenants)
        manual = {j.tenant_id for j in await self.store.jobs(statuses=("queued",), limit=1000)
                  if j.trigger == "manual"}
        return [(tid, name) for tid, name in everyone if name in wanted or tid in manual]

    async def _finish(self, tid: str, active: _Active) -> None:
        self._active.pop(tid, None)
        await self.store.release(tid, self.holder)
        if active.task.cancelled():
            return
        exc = active.task.exception()
        if exc is not None:
            log.error("training window of job %s ended with %s: %s", active.job_id,
                      type(exc).__name__, exc)

    async def _supervise(self, a: _Active, now: float) -> None:
        await self.store.progress(a.job_id, now=now, steps=a.control.step,
                                  metrics=dict(a.control.metrics))
        job = await self.store.get(a.job_id)
        reason = None
        if job.cancel_requested:
            reason = "cancelled"
        elif a.window.closes_at is not None and now >= a.window.closes_at:
            reason = "window_closed"
        elif now - a.started >= a.budget.minutes * 60.0:
            reason = "budget_minutes"
        elif a.window.yields_to_traffic and await self.activity.last_traffic_at(a.tenant_id) > a.started:
            reason = "traffic"
        elif not await self.store.renew(a.tenant_id, self.holder,
                                        ttl_s=self.settings.lease_ttl_s, now=now):
            reason = "lease_lost"
        if reason is not None and not a.control.stopping:
            log.info("training job %s: stopping (%s)", a.job_id, reason)
            a.control.stop(reason)

    async def _window(self, tid: str, now: float) -> Window | None:
        for trigger in self.triggers:
            w = await trigger.window(tid, now)
            if w is None:
                continue
            if w.trigger in ("cron", "calendar") and self.settings.quiet_minutes > 0:
                last = await self.activity.last_traffic_at(tid)
                if now - last < self.settings.quiet_minutes * 60.0:
                    continue
            return w
        return None

    async def _maybe_start(self, tid: str, name: str, now: float) -> None:
        job = await self.store.open_job(tid)
        if job is not None and job.status == "queued" and job.trigger == "manual":
            minutes = job.budget_minutes or self.settings.budget_minutes
            window = Window("manual", now, now + minutes * 60.0, "requested",
                            yields_to_traffic=False)
            budget = Budget(minutes, job.budget_steps or self.settings.budget_steps)
        else:
            found = await self._window(tid, now)
            if found is None:
                return
            window = found
            budget = Budget(self.settings.budget_minutes, self.settings.budget_steps)
            if job is None and not await self._new_data(tid):
                return
            if (job is not None and job.last_window == window.key
                    and job.stop_reason in SPENT):
                return  # this window's budget is spent; the job resumes in the next one
        if not await self.store.acquire(tid, self.holder, ttl_s=self.settings.lease_ttl_s,
                                        now=now, job_id=job.id if job else None):
            return  # another process trains this tenant
        job = await self._job_under_lease(tid, name, job, window, now)
        if job is None:
            await self.store.release(tid, self.holder)
            return
        job = await self.runner.begin(job, window, budget, self.holder)
        control = Control()
        task = asyncio.create_task(self.runner.train(job, budget, control),
                                   name=f"molt-train-{job.id}")
        self._active[tid] = _Active(job.id, tid, window, budget, now, control, task)
        log.info("training job %s (%s): window %s opened", job.id, name, window.trigger)

    async def _job_under_lease(self, tid: str, name: str, seen: TrainingJob | None,
                               window: Window, now: float) -> TrainingJob | None:
        """With the lease held: the job to run (read again: another process may have
        changed it), or None."""
        job = await self.store.open_job(tid)
        if job is None:
            if seen is not None or not await self._new_data(tid):
                return None  # it finished elsewhere meanwhile
            until = await self.activity.last_traffic_at(tid)
            job, _ = await self.store.create_job(tid, name, trigger=window.trigger, now=now,
                                                 data_until=until)
        if job.cancel_requested:
            await self.store.update(job.id, now=now, status="cancelled", finished_at=now,
                                    stop_reason="cancelled", event="cancelled")
            return None
        await self.store.acquire(tid, self.holder, ttl_s=self.settings.lease_ttl_s, now=now,
                                 job_id=job.id)
        return job

    async def _new_data(self, tid: str) -> bool:
        last = await self.store.last_finished(tid)
        traffic = await self.activity.last_traffic_at(tid)
        return traffic > (last.data_until if last else 0.0)
