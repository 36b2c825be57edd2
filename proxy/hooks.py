"""The request context and the hooks that may change a request before it goes upstream.

Skills and context injection, and the think-augmented tool transform, plug in
here. A hook gets the context (which it may annotate: skill generation,
injected skills, context version) and the body about to go upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.auth import Principal
from proxy.sessions import SessionRef
from proxy.tafc import Plan


@dataclass(slots=True)
class TurnContext:
    turn_id: str
    principal: Principal
    session: SessionRef
    alias: str
    version: str | None
    started: float
    skill_generation: int | None = None
    injected_skills: list[dict[str, Any]] | None = None
    context_version: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    # what the TAFC hook added to this request's tools (proxy/tafc.py), to strip on the way back
    tafc: Plan | None = None


class RequestHook(Protocol):
    async def __call__(self, ctx: TurnContext, body: dict[str, Any]) -> dict[str, Any]: ...


class ResponseHook(Protocol):
    """Rewrites a non-streamed response body (dict) before it reaches the client."""

    def __call__(self, ctx: TurnContext, data: dict[str, Any]) -> dict[str, Any]: ...
