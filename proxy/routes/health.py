"""GET /healthz and GET /metrics.

/healthz answers 200 with `"status": "ok"` when every part is healthy, else
503 with `"status": "degraded"`; each part reports itself under its own key.

`recorder`: `healthy` (false when the writer task is dead or a queued turn has
waited longer than `recorder.stuck_after_s`), `alive`, `state` (not_started,
replaying, idle, writing, retrying, restarting, stopped), `queue_depth`,
`oldest_queued_age_s` (null when nothing is queued), `last_write_at` (epoch
seconds of the last successful write, null before the first) and
`last_write_age_s`, `restarts` (writer deaths), `dead_letters` (turns the store
refused whole since start), `spool` (whether the spool is on) and
`replay_done` (the files left by a recorder that is gone are written).

`ttt_sessions` (only when a local model is served): per model alias, the
per-session fast-weight states it holds (`sessions`, `bytes`, `max_bytes`, and
per tenant), and how many were dropped for the memory cap of all tenants
(`evicted`), after `idle_s` (`expired`) and for a tenant's own limits
(`tenant_evicted`, by tenant id). It never makes the answer degraded.
"""

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


@runtime_checkable
class _HoldsTTTSessions(Protocol):
    """A backend that keeps per-session fast weights (the local model engine)."""

    def ttt_stats(self) -> dict[str, object]: ...


def ttt_sessions(state: ProxyState) -> dict[str, dict[str, object]]:
    """alias -> its backend's TTT session states, for every backend that keeps them."""
    out: dict[str, dict[str, object]] = {}
    for alias in state.upstreams.aliases():
        backend = state.upstreams.backend_of(alias)
        if isinstance(backend, _HoldsTTTSessions):
            out[alias] = backend.ttt_stats()
    return out


def engine_problems(state: ProxyState) -> dict[str, str]:
    """alias -> what is wrong with the backend serving it, for every unhealthy one."""
    out: dict[str, str] = {}
    for alias in state.upstreams.aliases():
        backend = state.upstreams.backend_of(alias)
        if isinstance(backend, _ReportsHealth):
            problem = backend.health()
            if problem is not None:
                out[alias] = problem
    return out


@router.get("/healthz")
async def healthz(state: State) -> JSONResponse:
    recorder = state.recorder.health()
    healthy = recorder.healthy
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "models": state.upstreams.aliases(),
        "recorder_queue": recorder.queue_depth,
        "recorder": recorder.as_dict(),
    }
    held = ttt_sessions(state)
    if held:
        body["ttt_sessions"] = held
    engines = engine_problems(state)
    if engines:  # a dead local engine: requests to it fail; the process should be replaced
        body.update(status="error", engines=engines)
        return JSONResponse(body, status_code=503)
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
