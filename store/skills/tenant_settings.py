"""Per-tenant skill settings, kept under `skills` in the `tenants.settings` JSON column.

A tenant may turn injection off, or change top-k, the similarity floor, the
token budget and whether evolver edits are quarantined; anything it does not
set falls back to the process-wide `SkillsSettings`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import sqlalchemy as sa

from store import tables as t
from store.database import Database
from store.errors import InvalidInput, NotFound
from store.settings import SkillsSettings


@dataclass(frozen=True, slots=True)
class TenantSkillSettings:
    enabled: bool
    top_k: int
    min_similarity: float
    token_budget: int
    quarantine_evolver_edits: bool

    @classmethod
    def defaults(cls, settings: SkillsSettings) -> TenantSkillSettings:
        return cls(settings.enabled, settings.top_k, settings.min_similarity,
                   settings.token_budget, settings.quarantine_evolver_edits)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_TYPES: dict[str, type] = {"enabled": bool, "top_k": int, "min_similarity": float,
                           "token_budget": int, "quarantine_evolver_edits": bool}


def apply_overrides(base: TenantSkillSettings, values: dict[str, Any]) -> TenantSkillSettings:
    clean: dict[str, Any] = {}
    for key, value in values.items():
        kind = _TYPES.get(key)
        if kind is None:
            raise InvalidInput(f"unknown skill setting {key!r} (known: {', '.join(_TYPES)})")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidInput(f"skill setting {key!r} must be {kind.__name__}")
        if key in ("top_k", "token_budget") and isinstance(value, int) and value < 0:
            raise InvalidInput(f"skill setting {key!r} must be >= 0")
        clean[key] = value
    return replace(base, **clean)


async def read_tenant_settings(db: Database, tenant_id: str, settings: SkillsSettings) -> TenantSkillSettings:
    async with db.engine.connect() as conn:
        row = (await conn.execute(
            sa.select(t.tenants.c.settings).where(t.tenants.c.id == tenant_id)
        )).first()
    base = TenantSkillSettings.defaults(settings)
    stored = (row[0] or {}).get("skills") if row is not None and isinstance(row[0], dict) else None
    if not isinstance(stored, dict):
        return base
    try:
        return apply_overrides(base, stored)
    except InvalidInput:
        return base


async def write_tenant_settings(db: Database, tenant_id: str, values: dict[str, Any],
                                settings: SkillsSettings) -> TenantSkillSettings:
    """Merge `values` into the tenant's stored skill settings (validated)."""
    async with db.engine.begin() as conn:
        row = (await conn.execute(
            sa.select(t.tenants.c.settings).where(t.tenants.c.id == tenant_id)
        )).first()
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        data = dict(row[0] or {})
        stored = dict(data.get("skills") or {})
        stored.update(values)
        result = apply_overrides(TenantSkillSettings.defaults(settings), stored)
        data["skills"] = stored
        await conn.execute(t.tenants.update().where(t.tenants.c.id == tenant_id).values(settings=data))
    return result
