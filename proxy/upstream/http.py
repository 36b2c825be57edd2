"""Any OpenAI-compatible server, forwarded as a byte stream: the fast path.

Our instantiation: aiohttp rather than httpx for the client pool, because
httpx's async pool is slow under concurrency (encode/httpx#3215); the figures
are in dev/LOG.md (`bench/proxy_overhead.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import aiohttp

from proxy.errors import UpstreamError, UpstreamTimeout, from_upstream
from proxy.upstream.base import UpstreamCall, UpstreamResponse
from store.settings import ModelRoute


class HTTPBackend:
    def __init__(self, route: ModelRoute) -> None:
        assert route.base_url
        self.route = route
        self.name = route.base_url.rstrip("/")
        self._url = self.name + "/chat/completions"
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=route.connect_timeout_s, sock_read=route.timeout_s
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.route.api_key_env:
            key = os.environ.get(self.route.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=self._timeout,
                auto_decompress=True,
            )
        return self._session

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        body = dict(call.body)
        body["model"] = self.route.upstream_model or call.alias
        return await self._post(call, json.dumps(body).encode(), self._headers())

    async def _post(self, call: UpstreamCall, payload: bytes, headers: dict[str, str]) -> UpstreamResponse:
        """POST `payload`; the whole body, or the stream's bytes as they come."""
        try:
            resp = await self._client().post(self._url, data=payload, headers=headers)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream {self.name} timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream {self.name} unreachable: {type(exc).__name__}", code="upstream_unreachable"
            ) from exc
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            resp.release()
            raise from_upstream(resp.status, raw, self.name)
        if not call.stream:
            try:
                raw = await resp.read()
            except TimeoutError as exc:
                raise UpstreamTimeout(f"upstream {self.name} timed out") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"upstream {self.name} failed: {type(exc).__name__}") from exc
            finally:
                resp.release()
            return UpstreamResponse(upstream=self.name, body=raw)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for piece in resp.content.iter_any():
                    yield piece
            except TimeoutError as exc:
                raise UpstreamTimeout(f"upstream {self.name} timed out mid-stream") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(
                    f"upstream {self.name} closed the stream: {type(exc).__name__}",
                    code="upstream_stream_closed",
                ) from exc

        async def close() -> None:
            # A stream read to its end returns its connection to the pool; a
            # cut one (client gone, error) closes it so the upstream stops.
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()

        return UpstreamResponse(upstream=self.name, chunks=chunks(), aclose=close)

    async def check(self) -> str:
        try:
            async with self._client().get(self.name + "/models", headers=self._headers()) as r:
                return f"HTTP {r.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{self.name} unreachable: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
