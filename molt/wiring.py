"""Putting the parts together: the app `molt serve` runs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from molt.evolver_service import EvolverService
from molt.evolver_service import build_router as build_evolver_router
from molt.trainer_service import PartsFactory, TrainerService
from molt.trainer_service import build_router as build_trainer_router
from proxy.app import create_app
from proxy.context_injection import ContextService
from proxy.routes import admin_skills, admin_tenants, admin_versions
from proxy.skills_injection import SkillsService
from proxy.tafc_injection import TafcService
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
    registry = Registry(settings.registry_root(), keep_candidates=settings.registry_keep_candidates)

    def local(route: ModelRoute) -> Backend:
        from proxy.local.backend import LocalBackend

        return LocalBackend(route, registry=registry)

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


def build_app(settings: MoltSettings, *, trainer_parts: PartsFactory | None = None) -> FastAPI:
    """The proxy with every subsystem wired in, from one settings tree.

    `trainer_parts` replaces `TRAINER_PARTS`, the training jobs' parts.
    """
    skills = SkillsService(settings)
    context = ContextService()
    tafc = TafcService(settings.tafc)
    evolver = EvolverService(settings, lambda: skills.library)
    parts = trainer_parts or (TRAINER_PARTS if trains_locally(settings) else None)
    trainer = TrainerService(settings, parts)
    return create_app(
        settings, backend_factories=backend_factories(settings),
        request_hooks=[skills.hook, context.hook, tafc],
        routers=[admin_skills.build_router(lambda: skills), admin_versions.router,
                 build_evolver_router(evolver, [skills.changed, context.changed]),
                 build_ui_router(lambda: skills), build_trainer_router(trainer),
                 admin_tenants.build_router(lambda: tafc)],
        # order matters: the evolver needs the started skill library
        services=[skills, context, tafc, evolver, trainer],
    )
