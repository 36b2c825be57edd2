"""The local backend: a causal LM served by molt itself (`local = "path"` in a route).

`send` renders the conversation with the model's chat template, picks the
weights (`VersionTracker.acquire`: the tenant's active registry version,
`alias@v7` pinned, `alias@base`), queues the request on the engine thread and
turns the pieces of text it produces into an OpenAI completion or SSE chunks
(tool calls parsed from `<tool_call>` blocks when the request offered tools).
The version is counted in flight until the answer is complete or the client
goes away, and is reported as `served_version`.

The model loads in the background when the app starts; requests wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch

from modeling.blocks import is_molt_block
from modeling.chat import TemplateError, render_prompt
from modeling.loading import LoadedBase, LoadError, eos_ids, load_base
from modeling.toolcalls import Text, ToolCall, ToolCallStream, parse_tool_calls
from proxy.errors import InvalidRequest, UpstreamError
from proxy.local.engine import Done, Engine, Event, Failed, GenRequest, Piece
from proxy.local.openai_format import ChunkWriter, completion, completion_id, usage
from proxy.local.runners import LocalLoader, Runner
from proxy.local.sampling import params_from_body
from proxy.upstream.base import UpstreamCall, UpstreamResponse
from proxy.upstream.versions import Slot, VersionTracker
from store.registry import Registry, base_id
from store.settings import ModelRoute

log = logging.getLogger("molt.local")


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class LocalBackend:
    def __init__(
        self, route: ModelRoute, *, registry: Registry | None, device: str = "auto",
        dtype: str | None = None, max_active: int = 16, poll_s: float = 0.5,
    ) -> None:
        assert route.local
        self.route = route
        self.name = f"local:{route.alias}"
        self.base_dir: Path | None = Path(route.local)
        self.base_name = base_id(route.upstream_model or route.alias)
        self.registry = registry
        self.device = pick_device(device)
        self.dtype = dtype
        self.max_active = max_active
        self.poll_s = poll_s
        self.base: LoadedBase | None = None
        self.engine: Engine | None = None
        self.versions: VersionTracker[Runner] | None = None
        self._start: asyncio.Task[VersionTracker[Runner]] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop: start on first use
            self._start = asyncio.get_running_loop().create_task(self._boot())

    async def _boot(self) -> VersionTracker[Runner]:
        assert self.base_dir is not None
        try:
            base = await asyncio.to_thread(load_base, self.base_dir, device=self.device, dtype=self.dtype)
        except LoadError as exc:
            log.error("%s: %s", self.name, exc)
            raise UpstreamError(f"local model {self.route.alias} failed to load: {exc}",
                                code="model_load_failed") from exc
        max_context = int(getattr(base.model.config, "max_position_embeddings", 0) or 1 << 30)
        self.base = base
        self.engine = Engine(base.tokenizer, device=base.device, eos_ids=eos_ids(base),
                             max_context=max_context, max_active=self.max_active)
        loader = LocalLoader(self.engine, base, self.route.lora_mode)
        self.versions = VersionTracker(loader, self.registry,
                                       self.base_name, self.base_dir, poll_s=self.poll_s)
        self.versions.start()
        log.info("%s: loaded %s on %s", self.name, self.base_dir, base.device)
        return self.versions

    async def ready(self) -> VersionTracker[Runner]:
        if self._start is None:
            self._start = asyncio.create_task(self._boot())
        return await asyncio.shield(self._start)

    # -- versions ----------------------------------------------------------
    async def sync_versions(self, tenant: str) -> str:
        return await (await self.ready()).refresh(tenant)

    def served_versions(self) -> dict[str, str]:
        vm = self.versions
        return {t: s.version for t, s in vm.active.items()} if vm else {}

    # -- requests ----------------------------------------------------------
    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        vm = await self.ready()
        assert self.base is not None and self.engine is not None
        body = call.body
        params = params_from_body(body)
        tools = body.get("tools") or None
        try:
            prompt = render_prompt(self.base.tokenizer, body["messages"], tools)
            dropped = False
            if len(prompt) >= self.engine.max_context:
                # molt's own blocks must never be what makes a request fail: serve without them
                lean = [m for m in body["messages"]
                        if not (isinstance(m, dict) and m.get("role") == "system" and is_molt_block(m.get("content")))]
                if len(lean) < len(body["messages"]):
                    shorter = render_prompt(self.base.tokenizer, lean, tools)
                    if len(shorter) < self.engine.max_context:
                        log.warning("%s: prompt over the context with molt's blocks (%d tokens); served without them",
                                    self.name, len(prompt))
                        prompt, dropped = shorter, True
        except TemplateError as exc:
            raise InvalidRequest(str(exc), param="messages", code="invalid_value") from exc
        if len(prompt) >= self.engine.max_context:
            raise InvalidRequest(
                f"the prompt is {len(prompt)} tokens; this model's context is "
                f"{self.engine.max_context}", param="messages", code="context_length_exceeded")
        parse = bool(tools) and body.get("tool_choice") != "none"
        slot = await vm.acquire(call.tenant, call.version)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(ev: Event) -> None:  # called on the engine thread
            loop.call_soon_threadsafe(events.put_nowait, ev)

        req = GenRequest(prompt, params, slot.handle, emit)
        self.engine.submit(req)
        done = _Finisher(vm, slot, req)
        model = str(body.get("model") or call.alias)
        if not call.stream:
            try:
                data = await self._collect(events, model, parse)
            finally:
                done()
            return UpstreamResponse(upstream=self.name, data=data, served_version=slot.version,
                                    dropped_blocks=dropped)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = self._stream(events, ChunkWriter(model, include_usage=include_usage), parse, done)

        async def close() -> None:
            done()

        return UpstreamResponse(upstream=self.name, chunks=chunks, aclose=close,
                                served_version=slot.version, dropped_blocks=dropped)

    async def _collect(self, events: asyncio.Queue[Event], model: str, parse: bool) -> dict[str, Any]:
        parts: list[str] = []
        while True:
            ev = await events.get()
            if isinstance(ev, Piece):
                parts.append(ev.text)
            elif isinstance(ev, Failed):
                raise UpstreamError(ev.message, code="local_generation_failed")
            else:
                break
        text = "".join(parts)
        content: str | None = text
        calls: list[ToolCall] = []
        if parse:
            parsed = parse_tool_calls(text)
            content, calls = parsed.content, parsed.tool_calls
        finish = "tool_calls" if calls and ev.finish_reason == "stop" else ev.finish_reason
        return completion(completion_id(), model, content, calls, finish,
                          usage(ev.prompt_tokens, ev.completion_tokens))

    async def _stream(
        self, events: asyncio.Queue[Event], out: ChunkWriter, parse: bool, done: _Finisher
    ) -> AsyncIterator[bytes]:
        parser = ToolCallStream() if parse else None
        n_calls = 0
        try:
            yield out.role()
            while True:
                ev = await events.get()
                if isinstance(ev, Failed):
                    raise UpstreamError(ev.message, code="local_generation_failed")
                if isinstance(ev, Piece):
                    items = parser.feed(ev.text) if parser else [Text(ev.text)]
                else:
                    items = parser.finish() if parser else []
                for item in items:
                    if isinstance(item, Text):
                        yield out.text(item.text)
                    else:
                        yield out.tool_call(n_calls, item)
                        n_calls += 1
                if isinstance(ev, Done):
                    finish = "tool_calls" if n_calls and ev.finish_reason == "stop" else ev.finish_reason
                    yield out.finish(finish)
                    if out.include_usage:
                        yield out.usage(usage(ev.prompt_tokens, ev.completion_tokens))
                    yield b"data: [DONE]\n\n"
                    return
        finally:
            done()

    async def check(self) -> str:
        await self.ready()
        served = ", ".join(f"{t}={v}" for t, v in sorted(self.served_versions().items()))
        assert self.base is not None
        return f"loaded {self.base_dir} on {self.base.device}; {served or 'base weights'}"

    async def aclose(self) -> None:
        if self._start is not None and not self._start.done():
            self._start.cancel()
        if self.versions is not None:
            await self.versions.aclose()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.stop)


class _Finisher:
    """Ends a request once: stops its generation and uncounts its version."""

    def __init__(self, vm: VersionTracker[Runner], slot: Slot[Runner], req: GenRequest) -> None:
        self.vm, self.slot, self.req, self.done = vm, slot, req, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.req.cancelled = True
            self.vm.release(self.slot)
