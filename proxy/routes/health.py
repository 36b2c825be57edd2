"""GET /healthz and GET /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from proxy.deps import State

router = APIRouter()


@router.get("/healthz")
async def healthz(state: State) -> dict[str, Any]:
    return {
        "status": "ok",
        "models": state.upstreams.aliases(),
        "recorder_queue": state.recorder.depth,
    }


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
