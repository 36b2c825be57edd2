"""Putting the parts together: the app `molt serve`, `molt proxy` and `molt worker` run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from fastapi import FastAPI

from molt.evolver_service import EvolverService
from molt.evolver_service import build_router as build_evolver_router
from molt.trainer_service import PartsFactory, TrainerService
from molt.trainer_service import build_router as build_trainer_router
from molt.ui_jobs import StoreJobs
from proxy.app import create_app
from proxy.context_injection import ContextService
from proxy.routes import admin_skills, admin_tenants, admin_tool_overlays, admin_versions
from proxy.skills_injection import SkillsService
from proxy.tafc_injection import TafcService
from proxy.tool_overlay_injection import ToolOverlayService
from proxy.ui import build_router as build_ui_router
from proxy.upstream.base import Backend
from proxy.upstream.routing import BackendFactory
from store.database import Database
from store.registry import Registry
from store.settings import ModelRoute, MoltSettings
from trainer.jobs import JobParts

# The tiny policy trained by `python -m bench.policy.pretrain`.
DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "bench" / "policy" / "checkpoint"


def with_default_model(settings: MoltSettings) -> MoltSettings:
    """With no model configured, `molt serve` serves the tiny policy (alias `tiny`) if it exists."""
    if settings.models or not (DEFAULT_POLICY / "config.json").is_file():
        return settings
    route = ModelRoute(alias="tiny", local=str(DEFAULT_POLICY))
    return settings.model_copy(update={"models": [route]})


def backend_factories(settings: MoltSettings) -> dict[str, BackendFactory]:
    """In-process backends: the local model server and vLLM with runtime LoRA.

    Model code (torch, transformers) is imported only when a route needs it.
    """
    registry = Registry.from_settings(settings)

    def local(route: ModelRoute) -> Backend:
        from proxy.local.backend import LocalBackend
        from proxy.local.ttt_sessions import TTTSessions

        limits = settings.ttt_sessions
        sessions = TTTSessions(idle_s=limits.idle_s, max_bytes=limits.max_bytes(),
                               tenant_limits=limits.tenant_limits)
        return LocalBackend(route, registry=registry, ttt_sessions=sessions)

    def vllm(route: ModelRoute) -> Backend:
        from proxy.upstream.vllm import VLLMBackend

        return VLLMBackend(route, registry=registry)

    return {"local": local, "vllm": vllm}


# The training method `molt serve` and `molt train now` run: builds a job's parts (query
# data, training body, registry, eval gate). None: this molt cannot train; the scheduler
# and /admin/train only report and cancel.
def lora_rl_parts(settings: MoltSettings, db: Database) -> JobParts:
    """LoRA RL on the served local model (molt/train_parts.py; torch is imported only here)."""
    from molt.train_parts import training_parts

    return training_parts(settings, db)


TRAINER_PARTS: PartsFactory | None = lora_rl_parts


def trains_locally(settings: MoltSettings) -> bool:
    """Whether this molt serves a local model the trainer can train."""
    return any(r.local for r in with_default_model(settings).models)


# What one process runs: `molt serve` (all), `molt proxy` (requests only), `molt worker`
# (the evolver loop, the training scheduler and the live rollback watch; no model routes).
Role = Literal["all", "proxy", "worker"]
ROLES: tuple[Role, ...] = ("all", "proxy", "worker")


class WiringError(ValueError):
    """Settings that cannot run in the asked role (a worker with nowhere to replay)."""


def check_role(settings: MoltSettings, role: Role) -> None:
    """A worker replays turns through a proxy's HTTP API: it needs `evolver.replay_url`."""
    if role == "worker" and settings.evolver.enabled and not settings.evolver.replay_url:
        raise WiringError(
            "`molt worker` runs the evolver, which replays turns through a proxy's HTTP API, "
            "but evolver.replay_url is not set: point it at a `molt proxy` (e.g. "
            "MOLT_EVOLVER__REPLAY_URL=http://proxy:8787/v1), or run `molt serve` to serve "
            "and learn in one process")


def build_app(settings: MoltSettings, *, trainer_parts: PartsFactory | None = None,
              role: Role = "all", tenants: Sequence[str] = (),
              evolver_clock: Callable[[], float] = time.time,
              settle_heap: bool = False) -> FastAPI:
    """The app for one role, from one settings tree.

    `trainer_parts` replaces `TRAINER_PARTS`, the training jobs' parts. `tenants` (worker
    and all) limits the evolver loop, the training windows and the rollback watch to those
    tenant names; empty: every tenant. Everything the roles share goes through the store
    and the registry, so any number of proxies and one worker can run side by side.
    `evolver_clock` is the evolver loop's notion of now (a simulation passes its own).
    `settle_heap`: a server process (`molt serve/proxy/worker`) freezes its heap once
    started (`proxy.heap`).
    """
    check_role(settings, role)
    learns = role != "proxy"
    skills = SkillsService(settings, serve=role != "worker")
    parts = trainer_parts or (TRAINER_PARTS if trains_locally(settings) else None)
    evolver = EvolverService(settings, lambda: skills.library, run_loop=learns, tenants=tenants,
                             clock=evolver_clock)
    evolver.on_change.append(skills.changed)
    trainer = TrainerService(
        settings, parts if learns else None, tenants=tenants,
        why_not=None if learns else "this is a `molt proxy`: training runs in `molt worker` "
        "(`molt train now` there); status, history and cancel still work here")
    if role == "worker":
        return create_app(settings, serve_api=False, services=[skills, evolver, trainer],
                          settle_heap=settle_heap)
    context = ContextService()
    evolver.on_change.append(context.changed)
    tafc = TafcService(settings.tafc)
    overlays = ToolOverlayService()
    evolver.on_change.append(overlays.changed)
    jobs = StoreJobs(lambda: trainer.store, settings.trainer.method)
    return create_app(
        settings, backend_factories=backend_factories(settings),
        request_hooks=[skills.hook, context.hook, overlays, tafc],
        routers=[admin_skills.build_router(lambda: skills), admin_versions.router,
                 build_evolver_router(evolver, [skills.changed, context.changed, overlays.changed]),
                 build_ui_router(lambda: skills, jobs=jobs), build_trainer_router(trainer),
                 admin_tenants.build_router(lambda: tafc),
                 admin_tool_overlays.build_router(overlays.changed)],
        # order matters: the evolver needs the started skill library
        services=[skills, context, overlays, tafc, evolver, trainer],
        settle_heap=settle_heap,
    )
