"""/ui/training: training jobs (the trainer's, once wired) and the versions they produced.

The job list comes from a `TrainingJobs` provider that the composition root
passes in (`molt.wiring`); until the trainer's job store is wired there is
none, and the page says that no training jobs exist rather than showing
anything made up. The registry's versions, with the data window, config and
metrics each one's meta.json records, are listed either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import APIRouter, Request, Response

from proxy.deps import State
from proxy.ui.login import User
from proxy.ui.web import UiRoute, page
from store.registry import Registry, VersionMeta


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """One training run as the dashboard shows it."""

    id: str
    status: str  # e.g. queued, running, done, failed
    method: str  # e.g. rl_prm, ttt
    progress: float | None  # 0..1, None if unknown
    started_at: float | None
    finished_at: float | None
    base: str | None = None
    version: str | None = None  # the registry version it produced
    loss: Sequence[float] = field(default_factory=tuple)
    reward: Sequence[float] = field(default_factory=tuple)


class TrainingJobs(Protocol):
    """Where the training jobs of a tenant are read from (the trainer's store)."""

    async def jobs(self, tenant: str) -> list[TrainingJob]: ...


def sparkline(values: Sequence[float], width: int = 240, height: int = 48) -> str:
    """SVG polyline points for a small curve (empty when fewer than two values)."""
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    rng = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - (v - lo) / rng * height:.1f}"
                    for i, v in enumerate(values))


def build_router(jobs: TrainingJobs | None = None) -> APIRouter:
    router = APIRouter(prefix="/ui/training", route_class=UiRoute, include_in_schema=False)

    @router.get("")
    async def training(request: Request, state: State, user: User) -> Response:
        s = state.settings
        reg = Registry.from_settings(s)

        def trained() -> list[VersionMeta]:
            t = user.tenant
            return [m for b in reg.bases(t) for m in reversed(reg.versions(t, b))]

        return page(request, "training.jinja", {
            "user": user, "nav": "training", "wired": jobs is not None,
            "jobs": await jobs.jobs(user.tenant) if jobs is not None else [],
            "trained": await asyncio.to_thread(trained), "sparkline": sparkline,
        })

    return router
