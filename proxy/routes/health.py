"""GET /healthz and GET /metrics."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from proxy.deps import State
from proxy.state import ProxyState

router = APIRouter()


@runtime_checkable
class _ReportsHealth(Protocol):
    """A backend that can be broken while the proxy runs (the local model engine)."""

    def health(self) -> str | None: ...


def engine_problems(state: ProxyState) -> dict[str, str]:
    """alias -> what is wrong with the backend serving it, for every unhealthy one."""
    out: dict[str, str] = {}
    for alias in state.upstreams.aliases():
        backend = state.upstreams.resolve(alias)[2]
        if isinstance(backend, _ReportsHealth):
            problem = backend.health()
            if problem is not None:
                out[alias] = problem
    return out


@router.get("/healthz", response_model=None)
async def healthz(state: State) -> dict[str, Any] | JSONResponse:
    body: dict[str, Any] = {
        "status": "ok",
        "models": state.upstreams.aliases(),
        "recorder_queue": state.recorder.depth,
    }
    engines = engine_problems(state)
    if engines:
        body.update(status="error", engines=engines)
        return JSONResponse(body, status_code=503)
    return body


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
