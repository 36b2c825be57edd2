"""GET /v1/models: the configured aliases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from proxy.deps import Caller, State
from proxy.errors import NotFoundError

router = APIRouter()


def _model(alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "molt"}


@router.get("/v1/models")
async def list_models(state: State, _caller: Caller) -> dict[str, Any]:
    return {"object": "list", "data": [_model(a) for a in state.upstreams.aliases()]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, state: State, _caller: Caller) -> dict[str, Any]:
    if model_id.partition("@")[0] not in state.upstreams.aliases():
        raise NotFoundError(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return _model(model_id)
