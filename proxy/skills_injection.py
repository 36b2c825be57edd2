"""Skills into requests: the request hook and the service that keeps the library live.

`SkillsService` lives as long as the app: it opens the library, seeds the
default tenant and runs the watcher (every `poll_interval_s`: edits on disk
become revisions, a generation moved by another process reloads that tenant).
The index (Chroma) and the embedding model (`skills.embedder`: numpy by
default, torch on request) are opened by the first retrieval that needs them,
in a thread, so a proxy starts fast and small; that first request pays the load
instead (see dev/LOG.md). `skills.preload` loads both at start.

`SkillInjector` is the request hook. On a main turn it builds the task query
(the latest user request and the tool names, cleaned of channel noise),
retrieves skills (cached per tenant, task and generation, so the continuation
turns of an agent loop embed nothing), renders them with
`modeling.blocks.render_skills_block` and inserts the block as one system
message right after the agent's leading system/developer messages. The
agent's own messages are never changed, so its prompt prefix stays cacheable.
Side turns (`X-Turn-Type: side`) get nothing. The context records the
generation and the injected skills (name, revision id, content hash).

An evolver replay (`ctx.replay`, parsed from `X-Molt-Replay`) gets the
current library, or with a proposal id the candidate library
(`proxy.skills_candidates`), less the skills it excludes
(`X-Molt-Skills-Exclude`); a replay that cannot get its library fails
(`Replay.unavailable`) rather than silently running without skills.

Every turn, replays too, leaves out the skills that the weight version serving
it has internalized (`proxy.skills_internalized`), after retrieval: the rest of
the block is what it would have been.

A failure of the index or the model never fails an agent's request: the turn goes up
without skills, and the error is logged and counted once per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from modeling.blocks import SKILLS_OPEN, render_skills_block
from proxy.hooks import TurnContext
from proxy.replay import Replay
from proxy.skills_candidates import CandidateLibraries
from proxy.skills_internalized import NOTHING, InternalizedSkills
from proxy.skills_serving import Selection, SkillServing
from proxy.state import ProxyState
from store.chat_shapes import offered_tools
from store.errors import StoreError
from store.keys import DEFAULT_TENANT
from store.registry import Registry
from store.settings import MoltSettings
from store.skills.embedding import make_embedder
from store.skills.index import SkillIndex, open_client
from store.skills.library import SkillLibrary
from store.skills.query import QueryCache

log = logging.getLogger("molt.skills")

_LEADING = ("system", "developer")


def inject_block(messages: list[Any], block: str) -> list[Any]:
    """A new message list with `block` as a system message after the leading system messages."""
    kept = [
        m for m in messages
        if not (isinstance(m, dict) and m.get("role") == "system"
                and isinstance(m.get("content"), str) and m["content"].startswith(SKILLS_OPEN))
    ]
    at = 0
    while at < len(kept) and isinstance(kept[at], dict) and kept[at].get("role") in _LEADING:
        at += 1
    return [*kept[:at], {"role": "system", "content": block}, *kept[at:]]


class SkillsService:
    """The skill library of a running proxy (a `proxy.app.Service`).

    With `serve=False` (a `molt worker`: the evolver edits the library, the proxies
    serve it) only the library is opened: no index, no embedding model, no watcher.
    """

    def __init__(self, settings: MoltSettings, *, serve: bool = True) -> None:
        self.settings = settings
        self.serve = serve
        self._library: SkillLibrary | None = None
        self._serving: SkillServing | None = None
        self._task: asyncio.Task[None] | None = None
        self._reported: set[str] = set()
        self._query = QueryCache()
        self._candidates: CandidateLibraries | None = None
        self._internalized: InternalizedSkills | None = None

    @property
    def library(self) -> SkillLibrary:
        if self._library is None:
            raise RuntimeError("the skills service has not started")
        return self._library

    @property
    def serving(self) -> SkillServing | None:
        """None when skills are disabled: the library is still editable, nothing is injected."""
        return self._serving

    async def start(self, state: ProxyState) -> None:
        cfg = self.settings.skills
        self._library = SkillLibrary(state.db, cfg, self.settings.data_dir)
        if not cfg.enabled or not self.serve:
            return
        path = cfg.index_path(self.settings.data_dir)
        index = SkillIndex(functools.partial(open_client, path, cfg.chroma_url),
                           make_embedder(cfg.embedder, threads=cfg.embed_threads))
        self._serving = SkillServing(self._library, index)
        registry = Registry(self.settings.registry_root(),
                            keep_candidates=self.settings.registry_keep_candidates)
        self._internalized = InternalizedSkills(registry, state.upstreams)
        try:  # the default tenant's first request should not pay for seeding
            snap = await self._serving.snapshot(DEFAULT_TENANT)
            if cfg.preload:  # ...nor, when asked, for the index and the model
                await self._serving.indexed(snap)
                await asyncio.to_thread(index.embedder.embed, ["load the model"])
        except (StoreError, OSError) as exc:
            self._report("startup", exc)
        self._task = asyncio.create_task(self._watch(), name="molt-skills-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.skills.poll_interval_s)
            try:
                if self._serving is not None:
                    await self._serving.poll()
            except (StoreError, OSError) as exc:
                self._report("watch", exc)

    def _report(self, kind: str, exc: Exception) -> None:
        if kind not in self._reported:
            self._reported.add(kind)
            log.error("skills %s failed (%s: %s); serving continues", kind,
                      type(exc).__name__, exc)

    async def changed(self, tenant: str) -> None:
        """Called after an in-process change (admin REST): serve it from the next request."""
        if self._serving is not None:
            await self._serving.refresh(tenant)

    async def hook(self, ctx: TurnContext, body: dict[str, Any]) -> dict[str, Any]:
        """The `RequestHook`: returns a new body with the skills block, or `body` unchanged."""
        if self._serving is None:
            return body
        if ctx.replay is not None:
            return await self._replay(ctx, ctx.replay, body)
        if ctx.session.turn_type != "main":
            loaded = self._serving.cached(ctx.principal.tenant_id)
            if loaded is not None:
                ctx.skill_generation = loaded.generation
            return body
        tenant = ctx.principal.tenant
        try:
            snap = await self._serving.snapshot(tenant)
            ctx.skill_generation = snap.generation
            if not snap.settings.enabled:
                return body
            query = self._query(body)
            if not query:
                return body
            sel: Selection = await self._serving.retrieve(tenant, query, offered=offered_tools(body))
        except (StoreError, OSError) as exc:
            self._report("retrieval", exc)
            return body
        return _apply(ctx, body, sel, await self._withheld(ctx) if sel.chosen else NOTHING)

    async def _withheld(self, ctx: TurnContext) -> frozenset[str]:
        """Skills not to inject: those the serving version internalized, and a replay's exclusions."""
        out = NOTHING
        if self._internalized is not None:
            out = await self._internalized.withheld(ctx.principal.tenant, ctx.alias, ctx.version)
        if ctx.replay is not None and ctx.replay.exclude_skills:
            out = out | ctx.replay.exclude_skills
        return out

    async def _replay(self, ctx: TurnContext, replay: Replay,
                      body: dict[str, Any]) -> dict[str, Any]:
        """An evolver replay: the current library, or a proposal's candidate library.

        Unlike a served turn, a replay that cannot get its library fails: a
        replay without skills would make the evolver's gate compare nothing.
        """
        assert self._serving is not None
        tenant = ctx.principal.tenant
        try:
            snap = await self._serving.snapshot(tenant)
            ctx.skill_generation = snap.generation
            query = self._query(body)
            offered = offered_tools(body)
            if replay.proposal is None:
                sel = await self._serving.retrieve(tenant, query, offered=offered)
            else:
                if self._candidates is None:
                    self._candidates = CandidateLibraries(self._serving)
                sel = await self._candidates.retrieve(tenant, query, replay.proposal, offered)
        except (StoreError, OSError) as exc:
            raise replay.unavailable("skills", exc) from exc
        return _apply(ctx, body, sel, await self._withheld(ctx) if sel.chosen else NOTHING)


def _apply(ctx: TurnContext, body: dict[str, Any], sel: Selection,
           withheld: frozenset[str] = NOTHING) -> dict[str, Any]:
    ctx.skill_generation = sel.generation
    chosen = [c for c in sel.chosen if c.skill.name not in withheld] if withheld else sel.chosen
    if not chosen:
        ctx.injected_skills = []
        return body
    ctx.injected_skills = [c.record() for c in chosen]
    block = render_skills_block([c.text() for c in chosen])
    out = dict(body)
    out["messages"] = inject_block(list(body["messages"]), block)
    return out
