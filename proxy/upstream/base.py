"""The backend interface every upstream implements.

A backend gets the request body as the client sent it (after molt's
injection) and returns either a whole body or an async iterator of SSE bytes
in the OpenAI chat.completion.chunk format. Errors are raised as
`proxy.errors.UpstreamError` (or a subclass): every backend translates its own
library's exceptions at this boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """The request in the client's own protocol, for a backend that speaks it natively.

    A route of another protocol (Anthropic Messages) sets it beside the internal
    chat body; a backend of that protocol sends it (with molt's blocks from the chat
    body), every other backend ignores it.
    """

    protocol: str  # "anthropic"
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # protocol headers to pass on


@dataclass(slots=True)
class UpstreamCall:
    alias: str
    # What followed '@' in the requested model name (`tiny@v7` -> "v7"), if anything.
    version: str | None
    body: dict[str, Any]
    stream: bool
    tenant_id: str
    turn_id: str
    # The tenant's name: registry versions are kept per tenant name.
    tenant: str = "default"
    # molt's session id, and whether this request ends the session (`X-Session-Done`):
    # a backend may keep per-session state (the local backend's TTT fast weights)
    session_id: str | None = None
    session_done: bool = False
    native: NativeRequest | None = None


async def _noop() -> None:
    return None


@dataclass(slots=True)
class UpstreamResponse:
    """Exactly one of `body` (non-streamed, JSON bytes), `data` (non-streamed,
    already a dict) or `chunks` (streamed SSE bytes) is set (a native non-streamed
    answer sets `body` and `data`).

    `native`: the backend answered in the client's own protocol (it sent
    `UpstreamCall.native`): `body` or `chunks` go to the client unchanged, and
    molt's internal form of the answer is `data` (non-streamed) or
    `internal_chunks` (chat.completion.chunk SSE, filled as `chunks` are read).
    """

    upstream: str
    body: bytes | None = None
    data: dict[str, Any] | None = None
    chunks: AsyncIterator[bytes] | None = None
    served_version: str | None = None
    aclose: Callable[[], Awaitable[None]] = field(default=_noop)
    # molt's own blocks (skills, context) were left out: with them the prompt did not fit
    dropped_blocks: bool = False
    native: bool = False
    internal_chunks: list[bytes] | None = None


class Backend(Protocol):
    """Where requests for one or more aliases are served."""

    name: str

    async def send(self, call: UpstreamCall) -> UpstreamResponse: ...

    async def check(self) -> str:
        """Probe reachability for `molt doctor`; return a short status, raise on failure."""
        ...

    async def aclose(self) -> None: ...
