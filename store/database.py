"""The database handle every store class shares."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from store.db import create_engine, redact_url
from store.errors import StoreUnavailable
from store.migrations import migrate
from store.settings import StoreSettings


class Database:
    """An engine plus the schema: `await Database.open(settings)` migrates to head."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.url = url

    @classmethod
    async def open(cls, settings: StoreSettings, *, run_migrations: bool = True) -> Database:
        engine = create_engine(settings)
        db = cls(engine, settings.url)
        if run_migrations:
            try:
                await migrate(engine)
            except (OperationalError, DBAPIError, OSError) as exc:
                await engine.dispose()
                raise StoreUnavailable(
                    f"cannot open the store at {redact_url(settings.url)}: {exc}"
                ) from exc
        return db

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that has the dialect's `on_conflict_do_nothing` / `_do_update` (both
        PostgreSQL and SQLite): writers in several processes meet on unique keys."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"store {redact_url(self.url)} unreachable: {exc}") from exc

    async def close(self) -> None:
        await self.engine.dispose()
