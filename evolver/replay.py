"""Replaying a recorded turn through serving, as a client of the proxy's own HTTP API.

The evolver never calls serving's internals: it sends the turn's recorded
request back to the proxy with an admin key, naming the tenant
(`X-Molt-Tenant`), the library to inject (`X-Molt-Replay`: a proposal id,
or `current`) and optionally a context block version (`X-Molt-Context`). Replays are recorded as `replay` turns, which mining and
training ignore. Decoding is greedy so that current and candidate differ only
by the library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from evolver.errors import ReplayFailed
from store.chat_shapes import answer_calls

if TYPE_CHECKING:  # httpx (with httpcore, h2, trio) comes with the first replay
    import httpx

Calls = list[tuple[str, dict[str, Any]]]


class Replayer(Protocol):
    async def replay(self, request: dict[str, Any], *, tenant: str, candidate: str | None,
                     context: str | None = None) -> Calls: ...


def calls_of(completion: dict[str, Any]) -> Calls:
    """(name, arguments) of every tool call the replayed completion answered with."""
    return [(c.name, c.args()) for c in answer_calls(completion)]


class HTTPReplayer:
    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """The HTTP client, made on the first replay (a `molt proxy` never replays)."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                             timeout=self.timeout_s)
        return self._client

    async def replay(self, request: dict[str, Any], *, tenant: str, candidate: str | None,
                     context: str | None = None) -> Calls:
        body = {k: v for k, v in request.items() if k not in ("stream", "stream_options", "n")}
        body["temperature"] = 0
        headers = {"X-Molt-Tenant": tenant, "X-Molt-Replay": candidate or "current"}
        if context:
            headers["X-Molt-Context"] = context
        import httpx

        try:
            r = await self.client().post("/chat/completions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ReplayFailed(f"replay failed: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise ReplayFailed(f"replay failed: HTTP {r.status_code} {r.text[:200]}")
        return calls_of(r.json())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
