"""A server that speaks Anthropic's Messages API (`protocol = "anthropic"` on a base_url route).

POST /v1/messages is forwarded natively: the client's body (with molt's
system blocks, `proxy.anthropic.native`) goes to `<base_url>/messages` with
the route's key as `x-api-key` and the client's `anthropic-version` and
`anthropic-beta` headers, and the upstream's bytes come back to the client
unchanged. Beside them the backend gives molt its internal form, for the
record and the session tracker: the completion a message says, or the chat
chunks a stream says, translated as the bytes are read
(`proxy.anthropic.record`). A request in another protocol (Chat Completions)
for such a route is refused: there is no Messages body to send.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import aiohttp

from proxy.anthropic.native import with_molt_blocks
from proxy.anthropic.record import ChunkTap, completion_of
from proxy.errors import InvalidRequest, UpstreamError
from proxy.sse_assembly import SSEEvents
from proxy.upstream.base import UpstreamCall, UpstreamResponse
from proxy.upstream.http import HTTPBackend
from store.settings import ModelRoute

DEFAULT_VERSION = "2023-06-01"
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


class AnthropicBackend(HTTPBackend):
    def __init__(self, route: ModelRoute) -> None:
        super().__init__(route)
        self._url = self.name + "/messages"

    def _native_headers(self, passed: dict[str, str]) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "anthropic-version": DEFAULT_VERSION}
        headers.update({k: v for k, v in passed.items() if k in PASSED_HEADERS})
        if self.route.api_key_env:
            key = os.environ.get(self.route.api_key_env)
            if key:
                headers["x-api-key"] = key
        return headers

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        native = call.native
        if native is None or native.protocol != "anthropic":
            raise InvalidRequest(
                f"model {call.alias!r} is served by an Anthropic Messages API; "
                "call POST /v1/messages", param="model", code="wrong_protocol")
        body = with_molt_blocks(native.body, call.body)
        body["model"] = self.route.upstream_model or call.alias
        resp = await self._post(call, json.dumps(body).encode(), self._native_headers(native.headers))
        resp.native = True
        if resp.chunks is None:
            assert resp.body is not None
            resp.data = completion_of(self._message(resp.body))
            return resp
        internal: list[bytes] = []
        resp.internal_chunks = internal
        resp.chunks = _tapped(resp.chunks, internal)
        return resp

    def _message(self, raw: bytes) -> dict[str, object]:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UpstreamError(f"upstream {self.name} returned HTTP 200 with a body that is "
                                "not valid JSON", code="upstream_invalid_response") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"upstream {self.name} returned HTTP 200 with a JSON "
                                f"{type(data).__name__}, not a message", code="upstream_invalid_response")
        return data

    async def check(self) -> str:
        try:
            async with self._client().get(self.name + "/models",
                                          headers=self._native_headers({})) as r:
                return f"HTTP {r.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{self.name} unreachable: {type(exc).__name__}") from exc


async def _tapped(chunks: AsyncIterator[bytes], internal: list[bytes]) -> AsyncIterator[bytes]:
    """The upstream's bytes unchanged; their internal form appended to `internal` as they pass."""
    events, tap = SSEEvents(), ChunkTap()
    async for piece in chunks:
        for payload in events.feed(piece):
            out = tap.feed(payload)
            if out:
                internal.append(out)
        yield piece
    for payload in events.close():
        out = tap.feed(payload)
        if out:
            internal.append(out)
