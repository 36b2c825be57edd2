"""Any litellm model string, through litellm's Router (retries per route).

Each route becomes one Router deployment whose litellm parameters are the
route's `litellm` model, `api_base`, key (read from `api_key_env`), timeout,
retries and its `litellm_params` table. Fallbacks are molt's own
(proxy/upstream/fallback.py), so they cross route kinds and the turn records
which upstream answered.

litellm is imported on first use: it is slow to import and most deployments
route only OpenAI-compatible URLs. Its exceptions are translated here, once.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.upstream.base import UpstreamCall, UpstreamResponse
from store.settings import ModelRoute


def _translate(exc: Exception, name: str) -> UpstreamError:
    status = getattr(exc, "status_code", None)
    kind = type(exc).__name__
    message = f"upstream {name} failed ({kind}): {getattr(exc, 'message', '') or exc}"
    if "Timeout" in kind:
        return UpstreamTimeout(message)
    if isinstance(status, int) and 400 <= status < 500:
        etype = "rate_limit_error" if status == 429 else "invalid_request_error"
        return UpstreamError(message, status=status, type=etype)
    return UpstreamError(message)


def deployment_params(route: ModelRoute) -> dict[str, Any]:
    """The litellm parameters of a route's deployment (passed to litellm's completion call)."""
    params: dict[str, Any] = dict(route.litellm_params)
    params.update(model=route.litellm, timeout=route.timeout_s, num_retries=route.num_retries)
    if route.api_base:
        params["api_base"] = route.api_base
    if route.api_key_env and os.environ.get(route.api_key_env):
        params["api_key"] = os.environ[route.api_key_env]
    return params


class LiteLLMBackend:
    """One Router for all litellm aliases."""

    def __init__(self, routes: Sequence[ModelRoute]) -> None:
        self.routes = {r.alias: r for r in routes}
        self.name = "litellm"
        self._router: Any = None

    def _get_router(self) -> Any:
        if self._router is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            from litellm.router import Router

            model_list = [{"model_name": r.alias, "litellm_params": deployment_params(r)}
                          for r in self.routes.values()]
            self._router = Router(model_list=model_list)
        return self._router

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        router = self._get_router()
        body = {k: v for k, v in call.body.items() if k != "model"}
        route = self.routes[call.alias]
        upstream = f"litellm:{route.litellm}"
        try:
            result = await router.acompletion(model=call.alias, **body)
        except Exception as exc:  # litellm raises many types; translated once here
            raise _translate(exc, upstream) from exc
        if not call.stream:
            return UpstreamResponse(upstream=upstream, body=result.model_dump_json().encode())

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in result:
                    yield b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
            except Exception as exc:  # translated at the boundary
                raise _translate(exc, upstream) from exc
            yield b"data: [DONE]\n\n"

        return UpstreamResponse(upstream=upstream, chunks=chunks())

    async def check(self) -> str:
        self._get_router()
        return f"router with {len(self.routes)} model(s): " + json.dumps(
            {a: r.litellm for a, r in self.routes.items()}
        )

    async def aclose(self) -> None:
        self._router = None
