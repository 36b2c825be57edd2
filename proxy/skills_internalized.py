"""Skills a weight version has internalized: requests it serves stop paying context for them.

The trainer's eval gate finds the skills a candidate answers as well without
(trainer/internalize.py) and writes them into the version's `meta.json`
(`internalized_skills`). The skills hook asks `withheld` which skills to leave
out of a request, by the version that will serve it: the pinned `alias@vN`, or
for a bare alias the version the route's backend serves the tenant now
(`VersionedBackend.served_versions`). The base weights internalized nothing,
and a route with no registry versions (a remote provider) withholds nothing.
A rollback to a version without the list brings the skills back by itself.
The skills stay in the library: only injection changes.

Each version's list is read from `meta.json` once and kept; a version that is
still a `candidate` is read on every request instead, because the gate writes
its list when it finishes judging it (only the gate's pinned replays ask for a
candidate). The hook runs before the backend takes its slot, so a hot-swap in
between serves one request under the other version's list: a skill more or
less in context, never an error.
"""

from __future__ import annotations

import asyncio
import logging

from proxy.errors import ProxyError
from proxy.upstream.routing import Upstreams
from proxy.upstream.versioned import VersionedBackend
from store.errors import StoreError
from store.registry import Registry, version_name

log = logging.getLogger("molt.skills")

BASE = "base"
NOTHING: frozenset[str] = frozenset()


class InternalizedSkills:
    """Per tenant and served version: the skills not to inject (read once per version)."""

    def __init__(self, registry: Registry, upstreams: Upstreams) -> None:
        self.registry = registry
        self.upstreams = upstreams
        self._backends: dict[str, VersionedBackend | None] = {}
        self._lists: dict[tuple[str, str, str], frozenset[str]] = {}

    def _versioned(self, alias: str) -> VersionedBackend | None:
        if alias not in self._backends:
            try:
                backend = self.upstreams.resolve(alias)[2]
            except ProxyError:
                return None
            self._backends[alias] = backend if isinstance(backend, VersionedBackend) else None
        return self._backends[alias]

    async def withheld(self, tenant: str, alias: str, version: str | None) -> frozenset[str]:
        """The skills the version serving `alias` (or the pinned `version`) internalized."""
        backend = self._versioned(alias)
        if backend is None:
            return NOTHING
        served = version or backend.served_versions().get(tenant)
        if not served or served == BASE:
            return NOTHING
        try:
            name = version_name(served)
        except StoreError:  # a malformed pin: the backend answers it with a 400
            return NOTHING
        key = (tenant, backend.base_name, name)
        hit = self._lists.get(key)
        if hit is not None:
            return hit
        try:
            meta = await asyncio.to_thread(self.registry.get, tenant, backend.base_name, name)
        except (StoreError, OSError) as exc:  # an unknown version: the backend refuses it
            log.debug("no meta.json for %s/%s %s: %s", tenant, backend.base_name, name, exc)
            return NOTHING
        skills = frozenset(meta.internalized_skills)
        if meta.status != "candidate":
            self._lists[key] = skills
        return skills
