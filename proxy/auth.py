"""Who is calling: API keys (Bearer or x-api-key), tenants, and the admin role.

With no live keys and no admin key configured the proxy runs open, as the
`default` tenant with admin rights; `molt serve` allows that only on a
loopback address. Key lookups are cached for `key_cache_ttl_s`, so a revoked
key stops working within that time in every process.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.errors import AuthenticationFailed, PermissionDenied
from store.keys import DEFAULT_TENANT, KeyStore, hash_key
from store.settings import ServerSettings


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    tenant: str
    role: str
    key_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Authenticator:
    def __init__(self, keys: KeyStore, settings: ServerSettings) -> None:
        self.keys = keys
        self.settings = settings
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._open: tuple[bool, float] = (False, 0.0)
        self._default: Principal | None = None

    async def start(self) -> None:
        ten = await self.keys.ensure_tenant(DEFAULT_TENANT)
        self._default = Principal(ten.id, ten.name, "admin", None)
        await self.is_open(force=True)

    async def is_open(self, *, force: bool = False) -> bool:
        is_open, expires = self._open
        now = time.monotonic()
        if force or now >= expires:
            is_open = self.settings.admin_key is None and not await self.keys.any_live_keys()
            self._open = (is_open, now + self.settings.key_cache_ttl_s)
        return is_open

    @staticmethod
    def _token(headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
            return None
        key = headers.get("x-api-key")
        return key.strip() if key else None

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        token = self._token(headers)
        admin = self.settings.admin_key
        if token and admin is not None and hmac.compare_digest(
            token.encode(), admin.get_secret_value().encode()
        ):
            assert self._default is not None
            return self._default
        if await self.is_open():
            assert self._default is not None
            return self._default
        if not token:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            principal = hit[0]
        else:
            info = await self.keys.lookup(token)
            principal = Principal(info.tenant_id, info.tenant, info.role, info.id) if info else None
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
        """An admin acting as `tenant` (the evolver's replays); others may not."""
        if not principal.is_admin:
            raise PermissionDenied("acting for another tenant needs an admin key", code="admin_required")
        ten = await self.keys.tenant_by_name(tenant)
        if ten is None:
            raise PermissionDenied(f"unknown tenant {tenant!r}", code="unknown_tenant")
        return Principal(ten.id, ten.name, "admin", principal.key_id)
