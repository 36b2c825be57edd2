"""The evolver inside `molt serve` (or `molt worker`): its loop, and evolutions on demand."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from evolver.llm import OpenAICompatModel
from evolver.loop import EvolutionReport, Evolver, EvolverLoop
from evolver.replay import HTTPReplayer
from proxy.deps import Admin, State
from proxy.errors import InvalidRequest, NotFoundError
from store.database import Database
from store.evolution import EvolutionStore
from store.settings import EvolverModelSettings, MoltSettings
from store.skills import SkillLibrary


def _model(cfg: EvolverModelSettings | None) -> OpenAICompatModel | None:
    return OpenAICompatModel.from_settings(cfg.base_url, cfg.model, cfg.api_key_env) if cfg else None


def replay_target(settings: MoltSettings) -> tuple[str, str | None]:
    ev = settings.evolver
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = ev.replay_url or f"http://{host}:{settings.server.port}/v1"
    key = os.environ.get(ev.replay_api_key_env) if ev.replay_api_key_env else None
    if key is None and settings.server.admin_key is not None:
        key = settings.server.admin_key.get_secret_value()
    return url, key


def build_evolver(settings: MoltSettings, db: Database, library: SkillLibrary) -> Evolver:
    url, key = replay_target(settings)
    return Evolver(db, library, HTTPReplayer(url, key), settings.evolver,
                   model=_model(settings.evolver.model), judge_model=_model(settings.evolver.judge))


class EvolverService:
    """A `proxy.app.Service`: runs the evolver loop beside the proxy."""

    def __init__(self, settings: MoltSettings, library: Any, *, run_loop: bool = True,
                 tenants: Sequence[str] = (), clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.tenants = tuple(tenants)  # the loop evolves only these tenants; empty: all
        self._library = library  # a callable giving the started SkillLibrary
        self.run_loop = run_loop
        self.clock = clock  # the loop's notion of now (a simulation passes its own)
        # called with the tenant name after a loop evolution changed what is served
        self.on_change: list[Callable[[str], Awaitable[None]]] = []
        self.evolver: Evolver | None = None
        self.loop: EvolverLoop | None = None
        self._state: Any = None

    async def start(self, state: Any) -> None:
        self.evolver = build_evolver(self.settings, state.db, self._library())
        self._state = state
        if self.settings.evolver.enabled and self.run_loop:
            self.loop = EvolverLoop(self.evolver, tenants=self.tenants, clock=self.clock,
                                    on_change=self.on_change)
            self.loop.start()

    async def stop(self) -> None:
        if self.loop is not None:
            await self.loop.stop()
        if self.evolver is not None:
            await self.evolver.replayer.aclose()  # type: ignore[attr-defined]

    async def evolve(self, tenant: str) -> EvolutionReport:
        assert self.evolver is not None
        return await self.evolver.evolve(tenant, trigger="manual")

    async def tick(self, tenants: Sequence[str] | None = None) -> list[EvolutionReport]:
        """One round of the loop now, on its own triggers, after the recorder's queue is written
        (`tenants`: only these tenant names; None: all the loop evolves)."""
        if self.loop is None:
            raise InvalidRequest("the evolver loop does not run in this process (evolver.enabled is "
                                 "false, or this is a `molt proxy`): POST /admin/evolve evolves on demand",
                                 code="evolver_loop_off")
        await self._state.recorder.flush()
        return await self.loop.tick(tenants)


class EvolveIn(BaseModel):
    tenant: str | None = None


def build_router(service: EvolverService, after_change: list[Any]) -> APIRouter:
    """Admin routes; `after_change` callbacks make this process serve an evolution at once."""
    router = APIRouter(prefix="/admin")

    @router.post("/evolve")
    async def evolve_now(item: EvolveIn, admin: Admin, tenant: str | None = None) -> dict[str, Any]:
        tenant = admin.scope(item.tenant or tenant)  # a tenant admin evolves only its own
        report = await service.evolve(tenant)
        if report.accepted or report.context.get("activated"):
            for callback in after_change:
                await callback(tenant)
        return dataclasses.asdict(report)

    @router.post("/evolver/tick")
    async def tick(admin: Admin, tenant: str | None = None) -> dict[str, Any]:
        """The loop's trigger check, now: evolve what is due (N new failures, or any and T
        elapsed). A global admin naming no tenant checks every tenant of the loop; otherwise
        the named (or the caller's own) tenant. For schedulers and simulations that pace it."""
        only = [admin.scope(tenant)] if tenant or not admin.is_global else None
        reports = await service.tick(only)
        return {"object": "list", "data": [dataclasses.asdict(r) for r in reports]}

    @router.get("/proposals")
    async def proposals(state: State, admin: Admin, tenant: str | None = None,
                        status: str | None = None) -> list[dict[str, Any]]:
        ten = await state.keys.tenant_by_name(tenant or admin.tenant)
        if ten is None:
            raise NotFoundError(f"no tenant {tenant!r}")
        return [dataclasses.asdict(p) for p in await EvolutionStore(state.db).proposals(ten.id, status=status)]

    @router.get("/evolutions")
    async def evolutions(state: State, admin: Admin, tenant: str | None = None,
                         limit: int = Query(20, ge=1, le=1000)) -> list[dict[str, Any]]:
        ten = await state.keys.tenant_by_name(tenant or admin.tenant)
        if ten is None:
            raise NotFoundError(f"no tenant {tenant!r}")
        return await EvolutionStore(state.db).evolutions(ten.id, limit=limit)

    return router
