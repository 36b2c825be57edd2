"""The request context and the hooks that may change a request before it goes upstream.

Skills and context injection, and the think-augmented tool transform, plug in
here. A hook gets the context and the body about to go upstream; it may set
the context's typed results (skill generation, injected skills, context
version, TAFC plan), which the turn's record takes. What a request asks of
the hooks travels typed too: `replay` (`proxy.replay.Replay`) for an evolver
replay, None for an agent's turn. There is no untyped side channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from proxy.auth import Principal
from proxy.replay import Replay
from proxy.sessions import SessionRef
from proxy.tafc import Plan

REPLAY_TURN = "replay"


@dataclass(slots=True)
class TurnContext:
    turn_id: str
    principal: Principal
    session: SessionRef
    alias: str
    version: str | None
    started: float
    # an evolver replay: which library and context block to inject
    replay: Replay | None = None
    skill_generation: int | None = None
    injected_skills: list[dict[str, Any]] | None = None
    # the tool overlays laid over this request's tools (proxy/tool_overlay_injection.py)
    tool_overlays: list[dict[str, Any]] | None = None
    context_version: str | None = None
    # what the TAFC hook added to this request's tools (proxy/tafc.py), to strip on the way back
    tafc: Plan | None = None

    @property
    def turn_type(self) -> str:
        """What the turn is recorded as: `replay` for a replay, else the session's
        (`main` or `side`, from `X-Turn-Type`)."""
        return REPLAY_TURN if self.replay is not None else self.session.turn_type


class RequestHook(Protocol):
    async def __call__(self, ctx: TurnContext, body: dict[str, Any]) -> dict[str, Any]: ...


class ResponseHook(Protocol):
    """Rewrites a non-streamed response body (dict) before it reaches the client."""

    def __call__(self, ctx: TurnContext, data: dict[str, Any]) -> dict[str, Any]: ...
