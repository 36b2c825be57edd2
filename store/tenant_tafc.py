"""Per-tenant TAFC settings, kept under `tafc` in the `tenants.settings` JSON column.

A tenant may set `mode`, `tau` and `tools`; anything it does not set falls back
to the process-wide `[tafc]` section.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from store import tables as t
from store.database import Database
from store.errors import InvalidInput, NotFound
from store.settings import TafcSettings


def merged(base: TafcSettings, values: dict[str, Any]) -> TafcSettings:
    """`base` with a tenant's overrides, validated (InvalidInput names the bad field)."""
    try:
        return TafcSettings.model_validate({**base.model_dump(), **values})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "tafc"
        raise InvalidInput(f"tafc setting {field!r}: {first.get('msg')}") from exc


async def _stored(db: Database, tenant_id: str) -> tuple[bool, dict[str, Any]]:
    async with db.engine.connect() as conn:
        row = (await conn.execute(
            sa.select(t.tenants.c.settings).where(t.tenants.c.id == tenant_id))).first()
    if row is None:
        return False, {}
    data = row[0] if isinstance(row[0], dict) else {}
    stored = data.get("tafc")
    return True, dict(stored) if isinstance(stored, dict) else {}


async def read_tenant_tafc(db: Database, tenant_id: str, base: TafcSettings) -> TafcSettings:
    _, stored = await _stored(db, tenant_id)
    try:
        return merged(base, stored)
    except InvalidInput:
        return base


async def write_tenant_tafc(db: Database, tenant_id: str, values: dict[str, Any],
                            base: TafcSettings) -> TafcSettings:
    """Merge `values` into the tenant's stored TAFC settings (validated first)."""
    async with db.engine.begin() as conn:
        row = (await conn.execute(
            sa.select(t.tenants.c.settings).where(t.tenants.c.id == tenant_id))).first()
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        data = dict(row[0] or {})
        stored = {**(data.get("tafc") or {}), **values}
        result = merged(base, stored)
        data["tafc"] = stored
        await conn.execute(t.tenants.update().where(t.tenants.c.id == tenant_id)
                           .values(settings=data))
    return result
