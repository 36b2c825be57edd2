"""The slow loop inside `molt serve` (or `molt worker`): the scheduler, and /admin/train.

`TrainerService` is a `proxy.app.Service`. At start it builds the job parts (data,
training method, registry, eval gate) from a `PartsFactory` that `molt.wiring`
passes in, and an APScheduler job that calls `Scheduler.tick()` every
`trainer.tick_s` seconds (never two ticks at once). With `trainer.enabled` the
configured triggers open windows; without, the scheduler still runs the jobs asked
for through `POST /admin/train` (`molt train now`). At stop every running window is
told to stop: its job checkpoints and is `paused`, so a restart loses no work.

With no factory (no training method wired into this molt) the routes still answer
status, history and cancel from the store, and `POST /admin/train` says, in the
OpenAI error shape (503 `trainer_unavailable`), that this server cannot train.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from proxy.auth import Principal
from proxy.deps import Admin, State
from proxy.errors import InvalidRequest, NotFoundError, ProxyError
from proxy.state import ProxyState
from store.database import Database
from store.errors import Conflict, InvalidInput, NotFound, StoreError
from store.registry import Registry, served_base_dirs
from store.settings import MoltSettings
from store.training import TrainingJob, TrainingStore
from trainer.gate_config import WatchConfig
from trainer.jobs import JobParts
from trainer.rollback import RollbackWatch, WatchDecision, aliases_by_base
from trainer.schedule import Scheduler, triggers_from

log = logging.getLogger("molt.trainer")

# Builds the job parts for this process from the settings and the open store.
PartsFactory = Callable[[MoltSettings, Database], JobParts]


class TrainerUnavailable(ProxyError):
    status = 503
    type = "server_error"
    code = "trainer_unavailable"


class TrainerService:
    """A `proxy.app.Service`: runs the training scheduler beside the proxy."""

    def __init__(self, settings: MoltSettings, parts: PartsFactory | None = None, *,
                 clock: Callable[[], float] = time.time, tenants: Sequence[str] = (),
                 why_not: str | None = None) -> None:
        if tenants:  # `molt worker --tenants`: windows open only for these tenants
            trainer = settings.trainer.model_copy(update={"tenants": list(tenants)})
            settings = settings.model_copy(update={"trainer": trainer})
        self.settings = settings
        self.tenants = frozenset(tenants)
        # why POST /admin/train cannot train here (a `molt proxy`: the worker trains)
        self.why_not = why_not or ("this molt has no training method wired in; it cannot "
                                   "train (status, history and cancel still work)")
        self._parts = parts
        self.clock = clock
        self.store: TrainingStore | None = None
        self.scheduler: Scheduler | None = None
        self._aps: Any = None
        self.watch: RollbackWatch | None = None

    async def start(self, state: ProxyState) -> None:
        self.store = TrainingStore(state.db)
        if self._parts is None:
            if self.settings.trainer.enabled:
                log.warning("trainer.enabled is set, but no training method is wired into "
                            "this molt: no windows will be used")
            return
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        cfg = self.settings.trainer
        triggers = triggers_from(cfg, self.store) if cfg.enabled else []
        self.scheduler = Scheduler(self.store, self._parts(self.settings, state.db), cfg,
                                   jobs_dir=cfg.jobs_dir(self.settings.data_dir),
                                   triggers=triggers, clock=self.clock)
        self._aps = AsyncIOScheduler()
        self._aps.add_job(self.tick, "interval", seconds=cfg.tick_s, max_instances=1,
                          coalesce=True, id="molt-train-tick")
        if cfg.watch_s is not None:
            self.watch = _rollback_watch(self.settings, state.db)
            self._aps.add_job(self.watch_once, "interval", seconds=cfg.watch_s, max_instances=1,
                              coalesce=True, id="molt-rollback-watch")
        self._aps.start()

    async def stop(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        if self.scheduler is not None:
            await self.scheduler.shutdown()

    async def watch_once(self) -> list[WatchDecision]:
        """One look at every promotion's live record; a regression is rolled back."""
        if self.watch is None:
            return []
        try:
            return await self.watch.check_all(self.tenants)
        except (StoreError, ValueError, OSError) as exc:
            log.error("rollback watch: %s: %s", type(exc).__name__, exc)
            return []

    async def tick(self) -> None:
        assert self.scheduler is not None
        try:
            await self.scheduler.tick()
        except (StoreError, ValueError, OSError) as exc:
            # the next tick tries again; a bad calendar file or a store outage is logged
            log.error("training scheduler: %s: %s", type(exc).__name__, exc)

    async def request(self, tenant: str, minutes: float | None,
                      steps: int | None) -> TrainingJob:
        if self.scheduler is None:
            raise TrainerUnavailable(self.why_not)
        job = await self.scheduler.request(tenant, minutes=minutes, steps=steps)
        await self.tick()  # start it now rather than at the next tick
        assert self.store is not None
        return await self.store.get(job.id)


def _rollback_watch(settings: MoltSettings, db: Any) -> RollbackWatch:
    """The live watch over every local or vLLM base this molt serves (trainer/rollback.py)."""
    from molt.wiring import with_default_model

    routes = with_default_model(settings).models
    return RollbackWatch(db, Registry.from_settings(settings),
                         WatchConfig(**settings.trainer.watch), aliases=aliases_by_base(routes),
                         base_dirs=served_base_dirs(routes))


class TrainIn(BaseModel):
    tenant: str | None = None
    minutes: float | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1)


class CancelIn(BaseModel):
    tenant: str | None = None
    job: str | None = None


async def _tenant(state: ProxyState, admin: Principal, name: str | None) -> tuple[str, str]:
    """(id, name) of the tenant an admin acts on: its own, or one it may act for."""
    if name is None or name == admin.tenant:
        return admin.tenant_id, admin.tenant
    other = await state.auth.on_behalf(admin, name)
    return other.tenant_id, other.tenant


def _translate(exc: StoreError) -> ProxyError:
    if isinstance(exc, NotFound):
        return NotFoundError(str(exc))
    if isinstance(exc, Conflict):
        return ProxyError(str(exc), status=409, type="invalid_request_error", code="conflict")
    if isinstance(exc, InvalidInput):
        return InvalidRequest(str(exc))
    return ProxyError(str(exc))


async def status_of(store: TrainingStore, tenant_id: str, tenant: str, now: float,
                    job_id: str | None = None) -> dict[str, Any]:
    """The tenant's unfinished job (else its latest), its events and the lease."""
    job: TrainingJob | None
    if job_id is not None:
        job = await store.get(job_id)
        if job.tenant_id != tenant_id:
            raise NotFound(f"no training job {job_id!r} for tenant {tenant!r}")
    else:
        job = await store.open_job(tenant_id)
        if job is None:
            latest = await store.jobs(tenant_id=tenant_id, limit=1)
            job = latest[0] if latest else None
    lease = await store.lease(tenant_id)
    return {
        "tenant": tenant,
        "job": job.to_dict() if job else None,
        "events": [e.to_dict() for e in await store.events(job.id)] if job else [],
        "lease": {"holder": lease.holder, "job_id": lease.job_id, "expires_at": lease.expires_at,
                  "live": lease.live(now)} if lease else None,
    }


def build_router(service: TrainerService) -> APIRouter:
    """/admin/train: start a job now, its status, the history, cancel (admin only)."""
    router = APIRouter(prefix="/admin/train", tags=["admin"])

    def store() -> TrainingStore:
        assert service.store is not None
        return service.store

    @router.post("", status_code=202)
    async def train_now(item: TrainIn, state: State, admin: Admin) -> dict[str, Any]:
        _, name = await _tenant(state, admin, item.tenant)
        try:
            job = await service.request(name, item.minutes, item.steps)
        except StoreError as exc:
            raise _translate(exc) from exc
        return job.to_dict()

    @router.get("/status")
    async def status(state: State, admin: Admin, tenant: str | None = None,
                     job: str | None = None) -> dict[str, Any]:
        tid, name = await _tenant(state, admin, tenant)
        try:
            out = await status_of(store(), tid, name, service.clock(), job)
        except StoreError as exc:
            raise _translate(exc) from exc
        out["enabled"] = service.settings.trainer.enabled
        out["can_train"] = service.scheduler is not None
        return out

    @router.get("/history")
    async def history(state: State, admin: Admin, tenant: str | None = None,
                      limit: int = 20) -> list[dict[str, Any]]:
        tid, _ = await _tenant(state, admin, tenant)
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be 1-1000", param="limit")
        return [j.to_dict() for j in await store().jobs(tenant_id=tid, limit=limit)]

    @router.post("/cancel")
    async def cancel(item: CancelIn, state: State, admin: Admin) -> dict[str, Any]:
        tid, name = await _tenant(state, admin, item.tenant)
        try:
            job = await cancel_job(store(), tid, name, item.job, service.clock())
        except StoreError as exc:
            raise _translate(exc) from exc
        if service.scheduler is not None:
            await service.tick()  # a job running here stops now rather than at the next tick
        return (await store().get(job.id)).to_dict()

    return router


async def cancel_job(store: TrainingStore, tenant_id: str, tenant: str, job_id: str | None,
                     now: float) -> TrainingJob:
    """Cancel `job_id`, or the tenant's unfinished job."""
    if job_id is None:
        job = await store.open_job(tenant_id)
        if job is None:
            raise NotFound(f"tenant {tenant!r} has no unfinished training job")
        job_id = job.id
    elif (await store.get(job_id)).tenant_id != tenant_id:
        raise NotFound(f"no training job {job_id!r} for tenant {tenant!r}")
    return await store.request_cancel(job_id, now=now)
