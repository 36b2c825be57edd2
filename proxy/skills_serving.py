"""What a serving process holds of each tenant's library, and retrieval over it.

`SkillServing` keeps, per tenant, a snapshot (the generation, the active
skills at their newest revision, the tenant's skill settings) and, once a
retrieval needs it, the index in step with it. `refresh` compares the snapshot's generation with the
database (one indexed read) and reloads when another process (the CLI, the
evolver, another replica) changed the library; `poll` also turns edits made
on disk into revisions. Both are cheap when nothing changed, and neither
touches the index: a snapshot is brought into the index (`indexed`: its
changed skills embedded) by the first retrieval that needs vectors. So a
process that never retrieves never opens Chroma or loads the embedding model,
and the first retrieval pays for both (see dev/LOG.md, 2026-12-02).

Retrieval, our instantiation of MetaClaw's "embedding cosine top-k": ask the
index for the nearest `top_k * 3` skills, drop those under the similarity
floor and any whose hash is not the snapshot's (an index row that is not
current yet), keep the best `top_k`, then fill the token budget in rank
order, skipping a skill that would not fit (tokens estimated as characters
/ 4 of the rendered text). The chosen skills are returned sorted by name, so
the same set always renders to the same block.

Standing rules (`scope: tools`) come first: a rule about how a tool wants its
arguments holds whenever the request offers that tool, however the task is
worded, and a task's words are a poor guide to which tools it will need ("Tell
Ann: ..." needs a contact look-up tool). They take the token budget but no top-k
place.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from modeling.blocks import SkillText, render_skill
from store.skills.errors import SkillFileError
from store.skills.index import SkillIndex
from store.skills.library import LibrarySkill, SkillLibrary
from store.skills.query import query_key
from store.skills.tenant_settings import TenantSkillSettings

log = logging.getLogger("molt.skills")
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Chosen:
    skill: LibrarySkill
    similarity: float
    pinned: bool = False  # a standing rule for an offered tool, not a similarity pick
    tokens: int = 0  # its estimated context cost (`estimate_tokens`), set by `select`

    def text(self) -> SkillText:
        s = self.skill.skill
        return SkillText(s.name, s.description, s.body)

    def record(self) -> dict[str, object]:
        """What a turn records of an injected skill (`tokens`: its estimated context cost)."""
        out: dict[str, object] = {"id": self.skill.name, "revision": self.skill.revision,
                                  "hash": self.skill.content_hash, "similarity": round(self.similarity, 4),
                                  "tokens": self.tokens}
        if self.pinned:
            out["pinned"] = True
        return out


@dataclass(frozen=True, slots=True)
class Selection:
    generation: int
    chosen: tuple[Chosen, ...]


@dataclass(slots=True)
class TenantSnapshot:
    tenant_id: str
    generation: int
    active: dict[str, LibrarySkill]
    settings: TenantSkillSettings
    cache: OrderedDict[tuple[str, TenantSkillSettings, frozenset[str]], Selection] = field(
        default_factory=OrderedDict)
    # whether the index holds exactly `active` (set by `SkillServing.indexed`)
    indexed: bool = False
    # the standing rules (`scope: tools`) among `active`, found once per snapshot
    standing: tuple[LibrarySkill, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.standing = tuple(s for s in self.active.values() if s.skill.scope == "tools")


def estimate_tokens(skill: SkillText) -> int:
    return len(render_skill(skill)) // CHARS_PER_TOKEN + 1


def pinned_for(active: Iterable[LibrarySkill], offered: frozenset[str]) -> list[LibrarySkill]:
    """The standing rules (`scope: tools`) about a tool the request offers, by name."""
    return sorted((s for s in active if s.skill.scope == "tools" and s.skill.serving
                   and offered.intersection(s.skill.tools)), key=lambda s: s.skill.name)


def select(hits: list[tuple[LibrarySkill, float]], settings: TenantSkillSettings,
           pinned: Iterable[LibrarySkill] = ()) -> list[Chosen]:
    sims = {s.skill.name: sim for s, sim in hits}
    # standing rules first, the ones nearest the task first (the budget may not hold them all)
    first = sorted((Chosen(s, sims.get(s.skill.name, 0.0), pinned=True) for s in pinned),
                   key=lambda c: -c.similarity)
    taken = {c.skill.skill.name for c in first}
    ranked = [Chosen(s, sim) for s, sim in hits if sim >= settings.min_similarity and s.skill.name not in taken]
    ranked = first + ranked[: settings.top_k]
    budget = settings.token_budget
    chosen: list[Chosen] = []
    for c in ranked:
        cost = estimate_tokens(c.text())
        if cost <= budget:
            chosen.append(replace(c, tokens=cost))
            budget -= cost
    return sorted(chosen, key=lambda c: c.skill.name)


class SkillServing:
    def __init__(self, library: SkillLibrary, index: SkillIndex, *, cache_size: int = 4096) -> None:
        self.library = library
        self.index = index
        self.cache_size = cache_size
        self._snapshots: dict[str, TenantSnapshot] = {}
        self._names: dict[str, str] = {}  # tenant id -> tenant name
        self._locks: dict[str, asyncio.Lock] = {}

    def cached(self, tenant_id: str) -> TenantSnapshot | None:
        return self._snapshots.get(tenant_id)

    async def snapshot(self, tenant: str) -> TenantSnapshot:
        """The tenant's snapshot, loading (and seeding) it on first use."""
        ten = await self.library.tenant(tenant)
        snap = self._snapshots.get(ten.id)
        if snap is None:
            snap = await self.refresh(tenant, force=True)
        return snap

    async def refresh(self, tenant: str, *, force: bool = False) -> TenantSnapshot:
        """Reload the tenant when its generation (or settings) changed; reindex what changed."""
        ten = await self.library.tenant(tenant)
        lock = self._locks.setdefault(ten.id, asyncio.Lock())
        async with lock:
            snap = self._snapshots.get(ten.id)
            if snap is None:
                try:
                    await self.library.ensure_seeded(tenant)
                except SkillFileError as exc:
                    log.error("seed skills refused, serving without them: %s", exc)
                await self.library.sync_disk(tenant)
            generation = await self.library.generation(tenant)
            settings = await self.library.tenant_settings(tenant)
            if snap is not None and not force and snap.generation == generation:
                if snap.settings != settings:
                    snap.settings = settings
                return snap
            current = await self.library.current(tenant)
            active = {n: s for n, s in current.items() if s.skill.serving}
            snap = TenantSnapshot(ten.id, generation, active, settings)
            self._snapshots[ten.id] = snap
            self._names[ten.id] = ten.name
            return snap

    async def indexed(self, snap: TenantSnapshot) -> TenantSnapshot:
        """The tenant's newest snapshot with the index in step with it (its changed skills embedded).

        The first call in a process opens the index and loads the embedding model. Syncs
        run under the tenant's lock, newest snapshot only, so the index never goes back
        to an older generation.
        """
        if snap.indexed:
            return snap
        async with self._locks.setdefault(snap.tenant_id, asyncio.Lock()):
            cur = self._snapshots.get(snap.tenant_id, snap)
            if not cur.indexed:
                pairs = {n: (s.skill, s.content_hash) for n, s in cur.active.items()}
                result = await asyncio.to_thread(self.index.sync, cur.tenant_id, pairs)
                if result.embedded or result.deleted:
                    log.info("skills index for tenant %s: %d embedded, %d removed (generation %d)",
                             self._names.get(cur.tenant_id, cur.tenant_id), result.embedded,
                             result.deleted, cur.generation)
                cur.indexed = True
            return cur

    async def poll(self) -> None:
        """One watcher round: disk edits -> revisions, then reload tenants whose generation moved."""
        for tenant_id, name in list(self._names.items()):
            report = await self.library.sync_disk(name, wait=False)
            for err in report.errors:
                log.warning("skill file refused: %s", err)
        generations = await self.library.revisions.generations()
        for tenant_id, name in list(self._names.items()):
            snap = self._snapshots.get(tenant_id)
            if snap is not None and generations.get(tenant_id, 0) != snap.generation:
                await self.refresh(name)
            elif snap is not None:
                settings = await self.library.tenant_settings(name)
                if settings != snap.settings:
                    snap.settings = settings

    async def retrieve(self, tenant: str, query: str, *, offered: frozenset[str] = frozenset(),
                       refresh: bool = True) -> Selection:
        """The skills for one task query and offered tools, cached per (tenant, query, tools, generation, settings)."""
        snap = await self.snapshot(tenant)
        key = (query_key(query), snap.settings, offered)
        hit = snap.cache.get(key)
        if hit is not None:
            snap.cache.move_to_end(key)
            return hit
        if refresh:
            # A new task: make sure we serve the newest library (one indexed read).
            snap = await self.refresh(tenant)
            hit = snap.cache.get(key)
            if hit is not None:
                return hit
        if needs_vectors(snap, query) and not snap.indexed:
            snap = await self.indexed(snap)  # may be a newer snapshot
            key = (query_key(query), snap.settings, offered)
        sel = await asyncio.to_thread(search, self.index, snap, query, offered)
        snap.cache[key] = sel
        if len(snap.cache) > self.cache_size:
            snap.cache.popitem(last=False)
        return sel


def needs_vectors(snap: TenantSnapshot, query: str) -> bool:
    """Whether retrieving for `query` asks the index (a task, a top-k, skills to rank)."""
    return bool(query) and snap.settings.top_k > 0 and bool(snap.active)


def search(index: SkillIndex, snap: TenantSnapshot, query: str,
           offered: frozenset[str] = frozenset()) -> Selection:
    """One uncached retrieval: standing rules for the offered tools, then floor, top-k and budget."""
    settings = snap.settings
    pinned = pinned_for(snap.standing, offered)
    if not needs_vectors(snap, query):
        return Selection(snap.generation, tuple(select([], settings, pinned)))
    vector = index.embed_query(query)
    hits = index.query(snap.tenant_id, vector, settings.top_k * 3)
    current: list[tuple[LibrarySkill, float]] = []
    for h in hits:
        s = snap.active.get(h.name)
        if s is not None and s.content_hash == h.content_hash:
            current.append((s, h.similarity))
    return Selection(snap.generation, tuple(select(current, settings, pinned)))
