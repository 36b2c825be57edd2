"""Which weights serve which request: loaded versions, the active one per tenant, hot-swap.

Shared by the local backend (a version is a model runner) and the vLLM
backend (a version is a LoRA adapter name on the server): a `Loader` opens
and closes versions, this module decides when.

A `Slot` is one loaded version (the loader's handle) with an in-flight count.
`acquire` picks the slot for a request (the tenant's active version, a pinned
`v7`, or `base`) and counts it; `release` uncounts it. Hot-swap (`refresh`):
the tenant's new active version is loaded and validated while the old one
keeps serving, then `active[tenant]` is replaced in one assignment on the
event loop, which is also where `acquire` reads it, so every request gets
either the old or the new slot, whole. A slot that is no longer active is
unloaded when its in-flight count reaches zero. A version that fails
validation or loading is refused and serving stays where it was.

Serving follows the registry's `active` pointer file, polled every `poll_s`,
so a promotion made by another process (the trainer, the CLI) is picked up.

The active pointer never names a version serving refused. Two guards keep it so:
- before the pointer is written: every promotion (`Registry.promote`, called by
  the CLI, the REST route and the trainer alike) validates the artifact against
  the base folder serving uses for it (`served_base_dirs` of the same settings;
  with no molt.toml, the shipped tiny policy as `tiny`), so a wrong base, wrong
  shapes, or missing or corrupt files are refused and the pointer is not touched;
- after it: a version that passed those checks and still cannot be served
  (it fails validation here, or the loader cannot load it: peft refuses its
  config, vLLM answers 4xx) is handed back with `Registry.refuse`, which points
  `active` at the version it replaced and records why in the history. The
  pointer names such a version only until the first serving process tries it
  (one poll, or the promoting request itself through the REST route).
A failure that may pass (the vLLM server unreachable) keeps the pointer, and
the load is tried again at every poll until it succeeds or the pointer moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from proxy.errors import InvalidRequest, NotFoundError, ProxyError, UpstreamError
from store.errors import InvalidInput, NotFound, StoreError
from store.registry import Registry, VersionMeta, version_name

log = logging.getLogger("molt.versions")
BASE = "base"
H = TypeVar("H")


class Loader(Protocol[H]):
    """Opens a validated registry version for serving, and closes it when drained."""

    def base(self) -> H: ...

    async def open(self, meta: VersionMeta, path: Path) -> H:
        """Load the version; raise a ProxyError (UpstreamError) when it cannot be."""
        ...

    async def close(self, handle: H) -> None: ...


@dataclass(eq=False)
class Slot(Generic[H]):
    tenant: str | None
    version: str
    handle: H
    inflight: int = 0


def _definitive(exc: ProxyError) -> bool:
    """A refusal that trying again will not change: the version fails validation, does not
    exist, or the loader says it cannot be served on this base (a 4xx from vLLM too)."""
    if isinstance(exc, (InvalidRequest, NotFoundError)):
        return True
    return exc.code == "version_load_failed" or exc.status < 500


class VersionTracker(Generic[H]):
    def __init__(
        self, loader: Loader[H], registry: Registry | None, base_name: str,
        base_dir: Path | None, *, poll_s: float = 0.5,
    ) -> None:
        self.loader = loader
        self.registry = registry
        self.base_name = base_name
        self.base_dir = base_dir
        self.poll_s = poll_s
        self.base_slot: Slot[H] = Slot(None, BASE, loader.base())
        self.active: dict[str, Slot[H]] = {}
        self.loaded: dict[tuple[str, str], Slot[H]] = {}
        self.refused: dict[str, str] = {}
        self._retry: set[str] = set()
        self._seen: dict[str, object] = {}  # tenant -> the pointer's signature at the last look
        self._loading: dict[tuple[str, str], asyncio.Task[Slot[H]]] = {}
        self._swap_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    # -- requests ----------------------------------------------------------
    async def acquire(self, tenant: str, requested: str | None) -> Slot[H]:
        if not requested:
            if tenant not in self._seen and self.registry is not None:
                await self.refresh(tenant)
            slot = self.active.get(tenant, self.base_slot)
        elif requested == BASE:
            slot = self.base_slot
        else:
            try:
                version = version_name(requested)
            except InvalidInput as exc:
                raise InvalidRequest(str(exc), param="model", code="invalid_version") from exc
            key = (tenant, version)
            while True:
                slot = self.loaded.get(key) or await self._load(tenant, version)
                if self.loaded.get(key) is slot:
                    break
        slot.inflight += 1
        return slot

    def release(self, slot: Slot[H]) -> None:
        slot.inflight -= 1
        self._maybe_unload(slot)

    def _is_active(self, slot: Slot[H]) -> bool:
        return slot is self.base_slot or (
            slot.tenant is not None and self.active.get(slot.tenant) is slot
        )

    def _maybe_unload(self, slot: Slot[H]) -> None:
        if slot.inflight > 0 or self._is_active(slot):
            return
        key = (slot.tenant or "", slot.version)
        if self.loaded.get(key) is slot:
            del self.loaded[key]
            self._spawn(self._unload(slot))

    async def _unload(self, slot: Slot[H]) -> None:
        try:
            await self.loader.close(slot.handle)
        except ProxyError as exc:
            log.error("unloading %s/%s %s failed: %s", slot.tenant, self.base_name, slot.version,
                      exc.message)
            return
        log.info("unloaded %s/%s %s", slot.tenant, self.base_name, slot.version)

    # -- loading -----------------------------------------------------------
    async def _load(self, tenant: str, version: str) -> Slot[H]:
        key = (tenant, version)
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._do_load(tenant, version))
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _do_load(self, tenant: str, version: str) -> Slot[H]:
        if self.registry is None:
            raise NotFoundError(f"version {version} requested, but no registry is configured",
                                param="model", code="model_not_found")
        reg = self.registry
        try:
            meta = await asyncio.to_thread(reg.validate, tenant, self.base_name, version, self.base_dir)
        except NotFound as exc:
            raise NotFoundError(str(exc), param="model", code="model_not_found") from exc
        except (InvalidInput, StoreError) as exc:
            raise InvalidRequest(f"version {version} cannot be served: {exc}", param="model",
                                 code="invalid_version") from exc
        handle = await self.loader.open(meta, reg.path(tenant, self.base_name, version))
        slot = Slot(tenant, version, handle)
        self.loaded[(tenant, version)] = slot
        log.info("loaded %s/%s %s (%s)", tenant, self.base_name, version, meta.kind)
        return slot

    # -- hot-swap ----------------------------------------------------------
    def served(self, tenant: str) -> str:
        return self.active.get(tenant, self.base_slot).version

    async def refresh(self, tenant: str) -> str:
        """Follow the tenant's `active` pointer now: preload, flip, drain the old one."""
        if self.registry is None:
            return BASE
        lock = self._swap_locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            self._seen[tenant], want = await asyncio.to_thread(self._look, tenant)
            if isinstance(want, Exception):
                self.refused[tenant] = f"unreadable active pointer: {want}"
                log.error("tenant %s: %s", tenant, self.refused[tenant])
                return self.served(tenant)
            target = want or BASE
            if target == self.served(tenant):
                self._retry.discard(tenant)
                return target
            try:
                if target == BASE:
                    slot = self.base_slot
                else:
                    slot = self.loaded.get((tenant, target)) or await self._load(tenant, target)
            except (InvalidRequest, NotFoundError, UpstreamError) as exc:
                return await self._refuse(tenant, target, exc)
            previous = self.active.get(tenant)
            if slot is self.base_slot:
                self.active.pop(tenant, None)
            else:
                self.active[tenant] = slot
            self.refused.pop(tenant, None)
            self._retry.discard(tenant)
            log.info("tenant %s: %s now serves %s", tenant, self.base_name, target)
            if previous is not None and previous is not slot:
                self._maybe_unload(previous)
            return target

    async def _refuse(self, tenant: str, target: str, exc: ProxyError) -> str:
        """Serving stays where it was; a version that cannot be served here gives the pointer back."""
        served = self.served(tenant)
        self.refused[tenant] = f"{target}: {exc.message}"
        if not _definitive(exc):
            # e.g. the vLLM server is unreachable: keep the pointer, try again at the next poll
            self._retry.add(tenant)
            log.error("tenant %s: cannot load %s yet, still serving %s: %s",
                      tenant, target, served, exc.message)
            return served
        self._retry.discard(tenant)
        assert self.registry is not None
        try:
            back = await asyncio.to_thread(
                self.registry.refuse, tenant, self.base_name, target, reason=exc.message,
                fallback=None if served == BASE else served)
        except (OSError, StoreError) as err:
            log.error("tenant %s: refused %s, and could not reset the active pointer: %s",
                      tenant, target, err)
            return served
        with contextlib.suppress(OSError):
            self._seen[tenant] = await asyncio.to_thread(
                self.registry.pointer_signature, tenant, self.base_name)
        restored = f"; the active pointer is back on {back.active}" if back else ""
        log.error("tenant %s: refused %s, still serving %s%s: %s",
                  tenant, target, served, restored, exc.message)
        return served

    def _look(self, tenant: str) -> tuple[object, str | None | Exception]:
        """The pointer's signature, then the version it names or why it cannot be read
        (blocking: a thread runs it; the registry may be remote)."""
        assert self.registry is not None
        sig = self.registry.pointer_signature(tenant, self.base_name)
        try:
            return sig, self.registry.active(tenant, self.base_name)
        except (InvalidInput, OSError) as exc:
            return sig, exc

    def _signatures(self) -> dict[str, object]:
        """Each known tenant's pointer signature (blocking: the registry may be remote)."""
        assert self.registry is not None
        names = set(self._seen)
        with contextlib.suppress(OSError):
            for t in self.registry.tenants():
                if self.base_name in self.registry.bases(t):
                    names.add(t)
        return {t: self.registry.pointer_signature(t, self.base_name) for t in sorted(names)}

    async def poll_once(self) -> None:
        if self.registry is None:
            return
        for tenant, sig in (await asyncio.to_thread(self._signatures)).items():
            if tenant not in self._seen or sig != self._seen[tenant] or tenant in self._retry:
                await self.refresh(tenant)

    async def _watch(self) -> None:
        while True:
            try:
                await self.poll_once()
            except (OSError, StoreError) as exc:
                log.error("registry watch failed: %s", exc)
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("registry watch failed")
            await asyncio.sleep(self.poll_s)

    def start(self) -> None:
        if self._watcher is None and self.registry is not None:
            self._watcher = asyncio.create_task(self._watch(), name="molt-registry-watch")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
