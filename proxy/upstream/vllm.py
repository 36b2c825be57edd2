"""A vLLM OpenAI server with runtime LoRA updating, driven by molt.

vLLM serves the base model and loads adapters at run time
(`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`): `POST /v1/load_lora_adapter`
`{"lora_name", "lora_path"}` and `POST /v1/unload_lora_adapter`
`{"lora_name"}`; a chat request names the adapter as its `model`. Each
registry version gets its own versioned name (`<tenant>-<base>-v0007`), so a
new version is loaded beside the old one, the alias flips to it, requests
already running finish on the old name, and the old adapter is unloaded when
its in-flight count reaches zero (`proxy.upstream.versions`). The adapter
folder must be readable by the vLLM server at the same path (shared storage).

Chat requests are forwarded as bytes by `HTTPBackend`, with `model` set to
the version's adapter name (or the base model for `alias@base` and tenants
without a version).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp

from proxy.errors import UpstreamError, from_upstream
from proxy.upstream.base import UpstreamCall, UpstreamResponse
from proxy.upstream.http import HTTPBackend
from proxy.upstream.versions import Slot, VersionTracker
from store.registry import Registry, VersionMeta, base_id
from store.settings import ModelRoute


class VLLMLoader:
    """Versions as LoRA adapters on the vLLM server (see `proxy.upstream.versions.Loader`)."""

    def __init__(self, backend: VLLMBackend) -> None:
        self.backend = backend

    def base(self) -> str:
        return self.backend.base_model

    async def open(self, meta: VersionMeta, path: Path) -> str:
        if meta.kind != "lora":
            raise UpstreamError(
                f"version {meta.version} is a {meta.kind} artifact; vLLM serves LoRA versions only",
                code="version_load_failed")
        name = f"{meta.tenant}-{meta.base}-{meta.version}"
        status, text = await self.backend.admin("load_lora_adapter",
                                                {"lora_name": name, "lora_path": str(path.resolve())})
        if status >= 400 and "already" not in text.lower():
            raise from_upstream(status, text.encode(), self.backend.name)
        return name

    async def close(self, handle: str) -> None:
        status, text = await self.backend.admin("unload_lora_adapter", {"lora_name": handle})
        if status >= 400 and status != 404:
            raise from_upstream(status, text.encode(), self.backend.name)


class VLLMBackend:
    def __init__(self, route: ModelRoute, *, registry: Registry | None, poll_s: float = 0.5) -> None:
        assert route.base_url
        self.route = route
        self.root = route.base_url.rstrip("/")
        self.name = f"vllm:{self.root}"
        self.base_model = route.upstream_model or route.alias
        self.base_name = base_id(self.base_model)
        self.base_dir: Path | None = None
        # The byte-stream path with `model` taken from the call (the adapter name).
        self._http = HTTPBackend(route.model_copy(update={"upstream_model": None}))
        self._session: aiohttp.ClientSession | None = None
        self.versions: VersionTracker[str] = VersionTracker(
            VLLMLoader(self), registry, self.base_name, None, poll_s=poll_s)

    async def admin(self, endpoint: str, payload: dict[str, Any]) -> tuple[int, str]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=self.route.timeout_s, connect=self.route.connect_timeout_s))
        try:
            async with self._session.post(f"{self.root}/{endpoint}", json=payload,
                                          headers=self._http._headers()) as r:
                return r.status, await r.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{self.name}: {endpoint} failed: {type(exc).__name__}",
                                code="upstream_unreachable") from exc

    async def sync_versions(self, tenant: str) -> str:
        self.versions.start()
        return await self.versions.refresh(tenant)

    def served_versions(self) -> dict[str, str]:
        return {t: s.version for t, s in self.versions.active.items()}

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        self.versions.start()
        slot = await self.versions.acquire(call.tenant, call.version)
        done = _Release(self.versions, slot)
        try:
            resp = await self._http.send(dataclasses.replace(call, alias=slot.handle))
        except BaseException:
            done()
            raise
        resp.served_version = slot.version
        if resp.chunks is None:
            done()
            if resp.body is not None:
                resp.body = _restore_model(resp.body, str(call.body.get("model") or call.alias))
            return resp
        inner = resp.aclose

        async def close() -> None:
            try:
                await inner()
            finally:
                done()

        resp.aclose = close
        return resp

    async def check(self) -> str:
        return await self._http.check()

    async def aclose(self) -> None:
        await self.versions.aclose()
        await self._http.aclose()
        if self._session is not None:
            await self._session.close()


def _restore_model(body: bytes, model: str) -> bytes:
    """Report the model the client asked for, not the internal adapter name."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body
    if isinstance(data, dict) and "model" in data:
        data["model"] = model
        return json.dumps(data).encode()
    return body


class _Release:
    def __init__(self, tracker: VersionTracker[str], slot: Slot[str]) -> None:
        self.tracker, self.slot, self.done = tracker, slot, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.tracker.release(self.slot)
