"""The trainer's `Generate` in molt: evaluation requests through the proxy's own HTTP API.

The eval gate asks serving for one assistant message per recorded step, from a
pinned version (`tiny@v0007`, `tiny@base`). It calls `/v1/chat/completions` as
a client, with an admin key, exactly as the evolver replays turns
(evolver/replay.py): `X-Molt-Tenant` names the tenant whose versions are
pinned, and `X-Molt-Replay: current` makes the call a replay, so it runs in its
own session, is injected with the tenant's current skills as served traffic is
(the same library for candidate and active version; each version less the
skills it internalized, as it is served), and is recorded as a `replay` turn,
which mining, training and the live watch ignore. Decoding is greedy. `exclude_skills` goes
as `X-Molt-Skills-Exclude`: serving leaves those skills out of the injected
ones (the gate's internalization test, trainer/internalize.py). The answer
must come from the version asked for (`x-molt-weight-version`); anything else
is a `GenerateFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from molt.evolver_service import replay_target
from store.settings import MoltSettings
from trainer.errors import GenerateFailed

JSON = dict[str, Any]


class HTTPGenerate:
    """`trainer.types.Generate` for one tenant, over the proxy's HTTP API."""

    def __init__(
        self, base_url: str, api_key: str | None, *, tenant: str, max_tokens: int = 256,
        timeout_s: float = 120.0, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.tenant = tenant
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(base_url=base_url.rstrip("/"),
                                                   headers=headers, timeout=timeout_s)
        self._owns_client = client is None

    @classmethod
    def from_settings(cls, settings: MoltSettings, tenant: str, **kw: Any) -> HTTPGenerate:
        """The proxy this process serves (or `evolver.replay_url`), with the replay key."""
        url, key = replay_target(settings)
        return cls(url, key, tenant=tenant, **kw)

    async def __call__(
        self, model: str, messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None, *, exclude_skills: Sequence[str] = (),
    ) -> JSON:
        body: JSON = {"model": model, "messages": [dict(m) for m in messages],
                      "temperature": 0, "max_tokens": self.max_tokens}
        if tools:
            body["tools"] = [dict(t) for t in tools]
        headers = {"X-Molt-Tenant": self.tenant, "X-Molt-Replay": "current"}
        if exclude_skills:
            headers["X-Molt-Skills-Exclude"] = ",".join(exclude_skills)
        try:
            r = await self._client.post("/chat/completions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise GenerateFailed(f"{model}: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise GenerateFailed(f"{model}: HTTP {r.status_code}: {_error_message(r)}")
        _, _, pinned = model.partition("@")
        served = r.headers.get("x-molt-weight-version")
        if pinned and served != pinned:
            raise GenerateFailed(f"{model}: served by {served or 'an unversioned upstream'}")
        try:
            message = r.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise GenerateFailed(f"{model}: the response has no assistant message") from exc
        if not isinstance(message, dict):
            raise GenerateFailed(f"{model}: the response has no assistant message")
        return message

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _error_message(r: httpx.Response) -> str:
    """The OpenAI envelope's message (never the request: it may hold prompt text)."""
    try:
        err = r.json().get("error") or {}
    except ValueError:
        return "no JSON body"
    return str(err.get("message") or err.get("code") or "no error message")[:300]
