"""Who is calling: API keys (Bearer or x-api-key), tenants, and the two admin roles.

Roles: an `agent` key calls the model routes as its tenant; a tenant admin
(`admin`) may also use the admin routes, for its own tenant only; a global
admin (the server's `admin_key`, or a `global_admin` key) acts on any tenant,
with `?tenant=` on the admin routes or `x-molt-tenant` on a chat request.
Anyone else naming another tenant gets 403.

Modes, re-checked every `key_cache_ttl_s` (so a revoked key stops working
within that time in every process):
- `open`: no admin key and no live key since start, on a loopback bind:
  every caller is a global admin of the `default` tenant (the local default).
- `keys`: a key or the admin key is required.
- `locked`: no key can be used (none live and no admin key), so every request
  is refused. A non-loopback bind without keys starts locked, and a proxy
  whose last key is revoked becomes locked: once keys have existed the proxy
  never reopens until it restarts. Each change of mode is logged (never a key).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from proxy.errors import AuthenticationFailed, PermissionDenied
from store.keys import (
    DEFAULT_TENANT,
    GLOBAL_ADMIN,
    NO_KEY_LIMITS,
    TENANT_ADMIN,
    KeyLimits,
    KeyStore,
    hash_key,
)
from store.settings import ServerSettings

log = logging.getLogger("molt.proxy.auth")

Mode = Literal["open", "keys", "locked"]


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    tenant: str
    role: str
    key_id: str | None
    # The key's own rate limits (proxy/limits.py applies them over `[limits]`).
    limits: KeyLimits = NO_KEY_LIMITS

    @property
    def is_admin(self) -> bool:
        """A tenant admin or a global admin."""
        return self.role in (TENANT_ADMIN, GLOBAL_ADMIN)

    @property
    def is_global(self) -> bool:
        return self.role == GLOBAL_ADMIN

    def scope(self, tenant: str | None, *, param: str = "tenant") -> str:
        """The tenant this caller asks to act on (`None`: its own); 403 if it may not."""
        if tenant is None or tenant == self.tenant:
            return self.tenant
        if not self.is_global:
            raise PermissionDenied(
                f"this key belongs to tenant {self.tenant!r} and cannot act on tenant {tenant!r}",
                param=param, code="tenant_forbidden",
            )
        return tenant


class Authenticator:
    def __init__(self, keys: KeyStore, settings: ServerSettings) -> None:
        self.keys = keys
        self.settings = settings
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._mode: Mode | None = None
        self._mode_expires = 0.0
        self._keys_lookup: asyncio.Future[bool] | None = None
        self._keys_seen = False
        self._default: Principal | None = None

    async def start(self) -> None:
        ten = await self.keys.ensure_tenant(DEFAULT_TENANT)
        self._default = Principal(ten.id, ten.name, GLOBAL_ADMIN, None)
        await self.mode(force=True)

    async def mode(self, *, force: bool = False) -> Mode:
        now = time.monotonic()
        if self._mode is not None and not force and now < self._mode_expires:
            return self._mode
        usable = self.settings.admin_key is not None or await self._any_live_keys(fresh=force)
        self._keys_seen = self._keys_seen or usable
        mode: Mode
        if usable:
            mode = "keys"
        elif self._keys_seen or not self.settings.is_loopback():
            mode = "locked"
        else:
            mode = "open"
        if mode != self._mode:
            self._log_mode(self._mode, mode)
        self._mode, self._mode_expires = mode, now + self.settings.key_cache_ttl_s
        return mode

    async def _any_live_keys(self, *, fresh: bool) -> bool:
        """One lookup at a time: when the cached mode expires under load, the requests in
        flight share it rather than each opening a connection."""
        pending = self._keys_lookup
        if pending is None or pending.done() or fresh:
            pending = asyncio.ensure_future(self.keys.any_live_keys())
            self._keys_lookup = pending
        return await asyncio.shield(pending)

    def _log_mode(self, old: Mode | None, new: Mode) -> None:
        host = self.settings.host
        if new == "open":
            log.warning("auth mode open: no API keys exist, so anyone who can reach %s is a "
                        "global admin (loopback only)", host)
        elif new == "keys":
            log.info("auth mode keys: every request needs an API key%s",
                     "" if old is None else f" (was {old})")
        elif old is None:
            log.warning("auth mode locked: no API keys exist and %s is not a loopback address, "
                        "so every request is refused; create one with `molt keys create`", host)
        else:
            log.warning("auth mode locked: no live API key remains, so every request is refused "
                        "until a key is created; the proxy does not reopen before a restart")

    async def is_open(self, *, force: bool = False) -> bool:
        return await self.mode(force=force) == "open"

    @staticmethod
    def _token(headers: Mapping[str, str]) -> str | None:
        """The key: `Authorization: Bearer <key>` (OpenAI clients, the anthropic SDK's
        `auth_token`), else `x-api-key: <key>` (the anthropic SDK's `api_key`, Claude Code)."""
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        key = headers.get("x-api-key")
        return key.strip() if key and key.strip() else None

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        token = self._token(headers)
        admin = self.settings.admin_key
        if token and admin is not None and hmac.compare_digest(
            token.encode(), admin.get_secret_value().encode()
        ):
            assert self._default is not None
            return self._default
        mode = await self.mode()
        if mode == "open":
            assert self._default is not None
            return self._default
        if not token:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                code="missing_api_key"
            )
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            principal = hit[0]
        else:
            info = await self.keys.lookup(token)
            principal = (Principal(info.tenant_id, info.tenant, info.role, info.id, info.limits)
                         if info else None)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, now + self.settings.key_cache_ttl_s)
        if principal is None:
            raise AuthenticationFailed("invalid or revoked API key")
        return principal

    async def require_admin(self, headers: Mapping[str, str]) -> Principal:
        principal = await self.authenticate(headers)
        if not principal.is_admin:
            raise PermissionDenied("this route needs an admin key", code="admin_required")
        return principal

    async def on_behalf(self, principal: Principal, tenant: str) -> Principal:
        """An admin acting as `tenant` (the evolver's replays, `x-molt-tenant`).

        A tenant admin may name only its own tenant; only a global admin crosses tenants.
        """
        if not principal.is_admin:
            raise PermissionDenied("acting for a tenant needs an admin key", code="admin_required")
        name = principal.scope(tenant, param="x-molt-tenant")
        if name == principal.tenant:
            return principal
        ten = await self.keys.tenant_by_name(name)
        if ten is None:
            raise PermissionDenied(f"unknown tenant {name!r}", code="unknown_tenant")
        return Principal(ten.id, ten.name, principal.role, principal.key_id, principal.limits)
