"""The store's tests run against SQLite and a real PostgreSQL server.

`.ci/run` starts PostgreSQL and sets MOLT_TEST_PG_URL; without a reachable
server the PostgreSQL cases skip and say why.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from store.database import Database
from store.settings import StoreSettings


def _pg_url() -> str | None:
    return os.environ.get("MOLT_TEST_PG_URL")


async def _reset_pg(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


def _pg_reachable(url: str) -> str | None:
    try:
        asyncio.run(_reset_pg(url))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/store.db"
    url = _pg_url()
    if not url:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    problem = _pg_reachable(url)
    if problem:
        pytest.skip(f"PostgreSQL skipped: cannot reach {url.split('@')[-1]}: {problem}")
    return url


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = await Database.open(StoreSettings(url=store_url))
    yield database
    await database.close()
