"""Tenants and API keys. Keys are stored as SHA-256 hashes, never in clear.

A key belongs to one tenant and has one role:
- `agent`: calls the model routes as its tenant;
- `admin`: a tenant admin, who may also use the admin routes, for its own tenant only;
- `global_admin`: may act on every tenant (as the server's `admin_key` does).

A key may carry its own rate limits (`KeyLimits`); each one left unset
(None) falls back to the server's `[limits]` default, and 0 means no limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from store import tables as t
from store.database import Database
from store.errors import InvalidInput, NotFound
from store.ids import new_id

KEY_PREFIX = "molt-"
AGENT, TENANT_ADMIN, GLOBAL_ADMIN = "agent", "admin", "global_admin"
ROLES = (AGENT, TENANT_ADMIN, GLOBAL_ADMIN)
DEFAULT_TENANT = "default"


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough (no password stretching).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Requests per minute, tokens per minute, requests in flight; None: the default, 0: none."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "concurrency"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidInput(f"{name} must be a whole number >= 0 (0: no limit)")

    def as_dict(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "tpm": self.tpm, "concurrency": self.concurrency}


NO_KEY_LIMITS = KeyLimits()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    tenant_id: str
    tenant: str
    name: str | None
    role: str
    prefix: str
    created_at: float
    revoked_at: float | None
    limits: KeyLimits = NO_KEY_LIMITS


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str


def _info(row: Any) -> KeyInfo:
    kid, tenant_id, tenant, name, role, prefix, created, revoked, rpm, tpm, conc = tuple(row)
    return KeyInfo(str(kid), str(tenant_id), str(tenant), name, str(role), str(prefix),
                   float(created), revoked, KeyLimits(rpm, tpm, conc))


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure_tenant(self, name: str) -> Tenant:
        if not name or len(name) > 128:
            raise InvalidInput("tenant name must be 1-128 characters")
        async with self.db.engine.begin() as conn:
            row = (
                await conn.execute(sa.select(t.tenants.c.id).where(t.tenants.c.name == name))
            ).first()
            if row is not None:
                return Tenant(row[0], name)
            # another process (a replica starting beside this one) may create it meanwhile
            await conn.execute(
                self.db.insert(t.tenants)
                .values(id=new_id("ten"), name=name, created_at=time.time())
                .on_conflict_do_nothing(index_elements=["name"])
            )
            tid = (
                await conn.execute(sa.select(t.tenants.c.id).where(t.tenants.c.name == name))
            ).scalar_one()
            return Tenant(str(tid), name)

    async def tenant_by_name(self, name: str) -> Tenant | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(t.tenants.c.id).where(t.tenants.c.name == name))
            ).first()
        return Tenant(row[0], name) if row else None

    async def create_key(
        self, tenant: str, *, name: str | None = None, role: str = AGENT,
        limits: KeyLimits = NO_KEY_LIMITS,
    ) -> tuple[str, KeyInfo]:
        """Create a key; the clear key is returned once and never stored."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {ROLES}")
        ten = await self.ensure_tenant(tenant)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        kid = new_id("key")
        now = time.time()
        prefix = key[: len(KEY_PREFIX) + 6]
        async with self.db.engine.begin() as conn:
            await conn.execute(
                t.api_keys.insert().values(
                    id=kid,
                    tenant_id=ten.id,
                    name=name,
                    role=role,
                    prefix=prefix,
                    key_hash=hash_key(key),
                    created_at=now,
                    **limits.as_dict(),
                )
            )
        return key, KeyInfo(kid, ten.id, ten.name, name, role, prefix, now, None, limits)

    def _select(self) -> sa.Select[tuple[object, ...]]:
        k = t.api_keys.c
        return sa.select(
            k.id, k.tenant_id, t.tenants.c.name, k.name, k.role, k.prefix, k.created_at,
            k.revoked_at, k.rpm, k.tpm, k.concurrency,
        ).join(t.tenants, t.tenants.c.id == k.tenant_id)

    async def list_keys(self) -> list[KeyInfo]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(self._select().order_by(t.api_keys.c.created_at))).all()
        return [_info(r) for r in rows]

    async def lookup(self, key: str) -> KeyInfo | None:
        """The live key with this clear value, or None (unknown or revoked)."""
        stmt = self._select().where(
            t.api_keys.c.key_hash == hash_key(key), t.api_keys.c.revoked_at.is_(None)
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return _info(row) if row else None

    async def _find(self, conn: AsyncConnection, key_id_or_prefix: str) -> KeyInfo:
        k = t.api_keys.c
        rows = (
            await conn.execute(
                self._select().where(sa.or_(k.id == key_id_or_prefix, k.prefix == key_id_or_prefix))
            )
        ).all()
        if not rows:
            raise NotFound(f"no key {key_id_or_prefix!r}")
        if len(rows) > 1:
            raise InvalidInput(f"{key_id_or_prefix!r} matches several keys; use the key id")
        return _info(rows[0])

    async def revoke(self, key_id_or_prefix: str) -> KeyInfo:
        async with self.db.engine.begin() as conn:
            info = await self._find(conn, key_id_or_prefix)
            now = time.time()
            await conn.execute(
                t.api_keys.update().where(t.api_keys.c.id == info.id).values(revoked_at=now)
            )
        return dataclasses.replace(info, revoked_at=now)

    async def set_limits(self, key_id_or_prefix: str, limits: KeyLimits) -> KeyInfo:
        """Replace a key's own limits (a None field: the server's default again).

        Serving processes see the change once their key cache expires (`key_cache_ttl_s`).
        """
        async with self.db.engine.begin() as conn:
            info = await self._find(conn, key_id_or_prefix)
            await conn.execute(
                t.api_keys.update().where(t.api_keys.c.id == info.id).values(**limits.as_dict())
            )
        return dataclasses.replace(info, limits=limits)

    async def any_live_keys(self) -> bool:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(t.api_keys.c.id).where(t.api_keys.c.revoked_at.is_(None)).limit(1)
                )
            ).first()
        return row is not None
