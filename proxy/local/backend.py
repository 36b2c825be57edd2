"""The local backend: a causal LM served by molt itself (`local = "path"` in a route).

`send` renders the conversation with the model's chat template, picks the
weights (`VersionTracker.acquire`: the tenant's active registry version,
`alias@v7` pinned, `alias@base`), queues the request on the engine thread and
turns the pieces of text it produces into an OpenAI completion or SSE chunks
(tool calls parsed from `<tool_call>` blocks when the request offered tools;
when streamed, text goes out piece by piece and each call goes out whole, in
one delta, once its block is complete and valid). The version is counted in
flight until the answer is complete or the client goes away, and is reported
as `served_version`.

Every request has a deadline, the route's `timeout_s` from its arrival
(waiting for the model to load included): past it the request fails with a
504 and is cancelled in the engine. A request the engine failed gets a 502
(`local_generation_failed`); one on a dead engine a 503 (`local_engine_dead`),
at once. A stream waits for its first token before it starts, so a request
that fails at its prompt gets an HTTP error rather than a 200 stream.

A version with trained TTT layers runs each request through its session's fast
weights (`X-Session-Id`, proxy/local/ttt_sessions.py), dropped at `X-Session-Done`.

The model loads in the background when the app starts; requests wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from modeling.blocks import is_molt_block
from modeling.chat import TemplateError, render_prompt
from modeling.loading import LoadedBase, LoadError, eos_ids, load_base
from modeling.toolcalls import Text, ToolCall, ToolCallStream, parse_tool_calls
from proxy.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from proxy.local.engine import Done, Engine, Event, Failed, GenRequest, Piece
from proxy.local.openai_format import ChunkWriter, completion, completion_id, usage
from proxy.local.runners import LocalLoader, Runner
from proxy.local.sampling import params_from_body
from proxy.local.ttt_sessions import SessionRunner, TTTRunner, TTTSessions
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
        ttt_sessions: TTTSessions | None = None,
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
        # per-session fast weights of TTT-enabled versions
        self.ttt_sessions = ttt_sessions if ttt_sessions is not None else TTTSessions()
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.route.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                vm = await self.ready()
        except TimeoutError as exc:
            raise self._timeout("waiting for the model to load") from exc
        engine = self.engine
        assert self.base is not None and engine is not None
        if engine.dead is not None:
            raise self._dead(engine)
        body = call.body
        params = params_from_body(body)
        tools = body.get("tools") or None
        prompt, dropped = self._render(body["messages"], tools, engine.max_context)
        parse = bool(tools) and body.get("tool_choice") != "none"
        try:
            async with asyncio.timeout_at(deadline):
                slot = await vm.acquire(call.tenant, call.version)
        except TimeoutError as exc:
            raise self._timeout(f"loading version {call.version}") from exc
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(ev: Event) -> None:  # called on the engine thread
            loop.call_soon_threadsafe(events.put_nowait, ev)

        runner: Any = slot.handle
        after = None
        if isinstance(runner, TTTRunner):
            session = runner = self.ttt_sessions.runner(runner, call.tenant, call.session_id,
                                                        slot.version)
            after = self._release_session(session, call)
        req = GenRequest(prompt, params, runner, emit)
        # The deadline arrives as one more event: whoever waits on the queue sees it.
        timer = loop.call_at(deadline, events.put_nowait, Failed("deadline", "timeout"))
        done = _Finisher(vm, slot, req, timer, after)
        model = str(body.get("model") or call.alias)
        try:
            engine.submit(req)
            if not call.stream:
                data = await self._collect(events, model, parse)
                done()
                return UpstreamResponse(upstream=self.name, data=data,
                                        served_version=slot.version, dropped_blocks=dropped)
            # The first event before the response starts: a request that fails at its
            # prompt gets an HTTP error, not a 200 stream that ends in an error event.
            first = await events.get()
            self._raise_failed(first)
        except BaseException:
            done()
            raise
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = self._stream(first, events, ChunkWriter(model, include_usage=include_usage),
                              parse, done)

        async def close() -> None:
            done()

        return UpstreamResponse(upstream=self.name, chunks=chunks, aclose=close,
                                served_version=slot.version, dropped_blocks=dropped)

    def _release_session(self, runner: SessionRunner, call: UpstreamCall) -> Callable[[], None]:
        def release() -> None:
            self.ttt_sessions.release(runner, session_done=call.session_done,
                                      tenant=call.tenant, session_id=call.session_id)
        return release

    async def count_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """The prompt's exact length in tokens with this model's chat template and tokenizer
        (`/v1/messages/count_tokens`; a `proxy.anthropic.tokens.TokenCounter`)."""
        await self.ready()
        assert self.base is not None
        try:
            ids = await asyncio.to_thread(render_prompt, self.base.tokenizer, body["messages"],
                                          body.get("tools") or None)
        except TemplateError as exc:
            raise InvalidRequest(str(exc), param="messages", code="invalid_value") from exc
        return len(ids)

    def _render(self, messages: Any, tools: Any, max_context: int) -> tuple[list[int], bool]:
        """The prompt's token ids, and whether molt's own blocks were left out to fit."""
        assert self.base is not None
        try:
            prompt = render_prompt(self.base.tokenizer, messages, tools)
            dropped = False
            if len(prompt) >= max_context:
                # molt's own blocks must never be what makes a request fail: serve without them
                lean = [m for m in messages
                        if not (isinstance(m, dict) and m.get("role") == "system"
                                and is_molt_block(m.get("content")))]
                if len(lean) < len(messages):
                    shorter = render_prompt(self.base.tokenizer, lean, tools)
                    if len(shorter) < max_context:
                        log.warning("%s: prompt over the context with molt's blocks (%d tokens); "
                                    "served without them", self.name, len(prompt))
                        prompt, dropped = shorter, True
        except TemplateError as exc:
            raise InvalidRequest(str(exc), param="messages", code="invalid_value") from exc
        if len(prompt) >= max_context:
            raise InvalidRequest(
                f"the prompt is {len(prompt)} tokens; this model's context is "
                f"{max_context}", param="messages", code="context_length_exceeded")
        return prompt, dropped

    # -- errors ------------------------------------------------------------
    def _timeout(self, what: str) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"local model {self.route.alias}: no answer within the route's timeout_s "
            f"({self.route.timeout_s:g} s) while {what}; the request was cancelled",
            code="local_timeout")

    def _dead(self, engine: Engine) -> UpstreamError:
        return UpstreamError(
            f"local model {self.route.alias}: the generation engine stopped ({engine.dead}); "
            "molt must be restarted", status=503, code="local_engine_dead")

    def _raise_failed(self, ev: Event) -> None:
        if not isinstance(ev, Failed):
            return
        if ev.kind == "timeout":
            raise self._timeout("generating")
        if ev.kind == "dead" and self.engine is not None:
            raise self._dead(self.engine)
        if ev.kind == "shutdown":
            raise UpstreamError(f"local model {self.route.alias}: {ev.message}", status=503,
                                code="local_shutting_down")
        raise UpstreamError(f"local model {self.route.alias}: {ev.message}",
                            code="local_generation_failed")

    async def _collect(self, events: asyncio.Queue[Event], model: str, parse: bool) -> dict[str, Any]:
        parts: list[str] = []
        while True:
            ev = await events.get()
            self._raise_failed(ev)
            if isinstance(ev, Piece):
                parts.append(ev.text)
            elif isinstance(ev, Done):
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
        self, first: Event, events: asyncio.Queue[Event], out: ChunkWriter, parse: bool,
        done: _Finisher,
    ) -> AsyncIterator[bytes]:
        parser = ToolCallStream() if parse else None
        n_calls = 0
        ev = first
        try:
            yield out.role()
            while True:
                self._raise_failed(ev)
                if isinstance(ev, Piece) and parser is not None:
                    items = parser.feed(ev.text)
                elif isinstance(ev, Piece):
                    items = [Text(ev.text)] if ev.text else []
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
                ev = await events.get()
        finally:
            done()

    def ttt_stats(self) -> dict[str, object]:
        """The per-session fast-weight states this backend holds (see `TTTSessions.stats`)."""
        return self.ttt_sessions.stats()

    def health(self) -> str | None:
        """None while this backend can serve; else what is wrong (for `/healthz`)."""
        if self._start is not None and self._start.done() and not self._start.cancelled():
            exc = self._start.exception()
            if exc is not None:
                return f"the model failed to load: {exc}"
        if self.engine is not None and self.engine.dead is not None:
            return f"the generation engine stopped ({self.engine.dead}); molt must be restarted"
        return None

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
    """Ends a request once: stops its generation, its deadline timer, and uncounts its version."""

    def __init__(self, vm: VersionTracker[Runner], slot: Slot[Runner], req: GenRequest,
                 timer: asyncio.TimerHandle, after: Callable[[], None] | None = None) -> None:
        self.vm, self.slot, self.req, self.timer, self.done = vm, slot, req, timer, False
        self.after = after

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.req.cancelled = True
            self.timer.cancel()
            self.vm.release(self.slot)
            if self.after is not None:
                self.after()
