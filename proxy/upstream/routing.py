"""Model aliases to backends, built from settings.

A client asks for `<alias>` (the active weight version), `<alias>@v7` (a
pinned version) or `<alias>@base`; the part after '@' goes to the backend.
An alias with fallbacks is sent through a FallbackBackend over the others'
own backends; `backend_of` and `backends` name the serving backends themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from proxy.errors import NotFoundError
from proxy.upstream.anthropic_http import AnthropicBackend
from proxy.upstream.base import Backend
from proxy.upstream.fallback import FallbackBackend
from proxy.upstream.http import HTTPBackend
from proxy.upstream.litellm_backend import LiteLLMBackend
from store.settings import ModelRoute

# Builds the backend of a route served in-process (`local = "path"`, or a vLLM
# server that molt drives); `molt` passes it in so that the proxy does not need
# to import model code unless such a route exists.
BackendFactory = Callable[[ModelRoute], Backend]


class Upstreams:
    def __init__(self, backends: dict[str, Backend], routes: Sequence[ModelRoute]) -> None:
        self._backends = backends
        self.routes = {r.alias: r for r in routes}
        # What a request for an alias is sent to: its backend, or its fallback chain.
        self._senders: dict[str, Backend] = dict(backends)
        for r in routes:
            chain = [(f, backends[f]) for f in r.fallbacks if f in backends]
            if chain and r.alias in backends:
                self._senders[r.alias] = FallbackBackend(r.alias, backends[r.alias], chain)

    @classmethod
    def from_routes(
        cls,
        routes: Sequence[ModelRoute],
        *,
        factories: dict[str, BackendFactory] | None = None,
        extra: dict[str, Backend] | None = None,
    ) -> Upstreams:
        factories = factories or {}
        backends: dict[str, Backend] = dict(extra or {})
        llm_routes = [r for r in routes if r.kind == "litellm"]
        shared_llm = LiteLLMBackend(llm_routes) if llm_routes else None
        for r in routes:
            if r.alias in backends:
                continue
            if r.kind == "litellm":
                assert shared_llm is not None
                backends[r.alias] = shared_llm
            elif r.vllm and "vllm" in factories:
                backends[r.alias] = factories["vllm"](r)
            elif r.kind == "http":
                backends[r.alias] = AnthropicBackend(r) if r.protocol == "anthropic" else HTTPBackend(r)
            else:
                factory = factories.get("local")
                if factory is None:
                    raise ValueError(
                        f"model alias {r.alias!r} is served locally but no local backend is wired"
                    )
                backends[r.alias] = factory(r)
        return cls(backends, routes)

    def aliases(self) -> list[str]:
        return sorted(self._backends)

    def resolve(self, model: str) -> tuple[str, str | None, Backend]:
        alias, _, version = model.partition("@")
        backend = self._senders.get(alias)
        if backend is None:
            raise NotFoundError(
                f"The model '{model}' does not exist or is not served here; "
                f"known models: {', '.join(self.aliases()) or 'none configured'}",
                param="model",
                code="model_not_found",
            )
        return alias, (version or None), backend

    def backend_of(self, alias: str) -> Backend | None:
        """The backend serving `alias` itself (not its fallback chain)."""
        return self._backends.get(alias)

    def backends(self) -> list[Backend]:
        unique: dict[int, Backend] = {id(b): b for b in self._backends.values()}
        return list(unique.values())

    async def aclose(self) -> None:
        for b in self.backends():
            await b.aclose()
