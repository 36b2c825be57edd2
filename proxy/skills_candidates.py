"""Candidate libraries for the evolver's replays: the current skills with a proposal laid over them.

The evolver replays a recorded turn through the proxy with `X-Molt-Replay:
<proposal id>`, parsed once into `TurnContext.replay` (`proxy.replay`). The
candidate library is the tenant's active skills at the served generation,
with the proposal's edits applied (`store.skills.overlay`: added and changed
skills in, retired and merged-away skills out). Nothing is written: the
changed skills are embedded in memory (a proposal touches 1-3 skills) and
scored against the query beside the index's hits, so a candidate is ranked
exactly as it would be once applied. Candidates are cached per (proposal,
generation).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.skills_serving import Selection, SkillServing, TenantSnapshot, pinned_for, select
from store.evolution import EvolutionStore
from store.skills.errors import SkillNotFound
from store.skills.index import SkillIndex
from store.skills.library import LibrarySkill
from store.skills.overlay import overlay
from store.skills.skillfile import content_hash, render_skill_file

if TYPE_CHECKING:  # numpy itself comes with the first candidate (store/skills/embedding.py)
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Candidate:
    proposal_id: str
    generation: int
    changed: dict[str, LibrarySkill]
    removed: frozenset[str]
    vectors: npt.NDArray[np.float32]  # one row per `changed` skill, in its order


def search_candidate(index: SkillIndex, snap: TenantSnapshot, cand: Candidate, query: str,
                     offered: frozenset[str] = frozenset()) -> Selection:
    settings = snap.settings
    shadowed = cand.removed | cand.changed.keys()
    library = [s for n, s in snap.active.items() if n not in shadowed] + list(cand.changed.values())
    pinned = pinned_for(library, offered)
    if not query or settings.top_k == 0:
        return Selection(snap.generation, tuple(select([], settings, pinned)))
    vector = index.embed_query(query)
    hits = index.query(snap.tenant_id, vector, settings.top_k * 3 + len(shadowed))
    pool: list[tuple[LibrarySkill, float]] = []
    for h in hits:
        s = snap.active.get(h.name)
        if s is not None and h.name not in shadowed and s.content_hash == h.content_hash:
            pool.append((s, h.similarity))
    for row, s in zip(cand.vectors, cand.changed.values()):
        if s.skill.serving:
            pool.append((s, float(row @ vector)))
    pool.sort(key=lambda p: -p[1])
    return Selection(snap.generation, tuple(select(pool, settings, pinned)))


class CandidateLibraries:
    def __init__(self, serving: SkillServing, *, capacity: int = 32) -> None:
        self.serving = serving
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, int], Candidate] = OrderedDict()

    async def candidate(self, tenant: str, snap: TenantSnapshot, proposal_id: str) -> Candidate:
        key = (proposal_id, snap.generation)
        found = self._cache.get(key)
        if found is not None:
            return found
        proposal = await EvolutionStore(self.serving.library.db).proposal(proposal_id)
        if proposal.tenant_id != snap.tenant_id:
            raise SkillNotFound(f"no proposal {proposal_id!r} for this tenant")
        # Every skill, not only active ones: a proposal may update a retired skill back in.
        current = {n: s.skill for n, s in (await self.serving.library.current(tenant)).items()}
        changed, removed = overlay(proposal.ops, current)
        items = {
            n: LibrarySkill(s, f"proposal:{proposal_id}", content_hash(render_skill_file(s)),
                            snap.generation)
            for n, s in sorted(changed.items())
        }
        embedder = self.serving.index.embedder
        vectors = await asyncio.to_thread(
            embedder.embed, [s.skill.embedding_text() for s in items.values()]
        )
        cand = Candidate(proposal_id, snap.generation, items, frozenset(removed), vectors)
        self._cache[key] = cand
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return cand

    async def retrieve(self, tenant: str, query: str, proposal_id: str,
                       offered: frozenset[str] = frozenset()) -> Selection:
        snap = await self.serving.refresh(tenant)
        if query and snap.settings.top_k > 0:  # the current skills are ranked from the index
            snap = await self.serving.indexed(snap)
        cand = await self.candidate(tenant, snap, proposal_id)
        return await asyncio.to_thread(search_candidate, self.serving.index, snap, cand, query, offered)
