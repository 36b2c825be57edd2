"""The dashboard at /ui: sessions, skills, versions, learning and training, server-rendered.

`build_router(skills)` is all the composition root needs; every page reuses
`proxy.auth` through `proxy.ui.login` and the same store and library calls as
the `/admin` routes.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from proxy.routes.admin_skills import Provider
from proxy.ui import learning, login, sessions, skills, training, versions
from proxy.ui.training import TrainingJob, TrainingJobs
from proxy.ui.web import UiRoute, static_file

__all__ = ["TrainingJob", "TrainingJobs", "build_router"]


def build_router(get_skills: Callable[[], Provider],
                 jobs: TrainingJobs | None = None) -> APIRouter:
    router = APIRouter(route_class=UiRoute, include_in_schema=False)
    router.add_api_route("/ui/static/{name}", static_file, methods=["GET"])
    for r in (login.router, sessions.router, skills.build_router(get_skills), versions.router,
              learning.router, training.build_router(jobs)):
        router.include_router(r)
    return router
