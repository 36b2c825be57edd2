"""A blank database migrated to head has exactly the schema the code queries."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from store import tables
from store.database import Database
from store.db import create_engine
from store.migrations import MIGRATIONS, migrate
from store.settings import StoreSettings
from tests.store.conftest import _pg_url, _reset_pg


async def _migrate_up_to(conn: AsyncConnection, name: str) -> None:
    """A database as an older molt left it: every migration before `name` applied and recorded."""
    await conn.execute(sa.text(
        "CREATE TABLE schema_migrations (name VARCHAR(128) PRIMARY KEY, applied_at FLOAT NOT NULL)"))
    for applied, fn in MIGRATIONS[:[n for n, _ in MIGRATIONS].index(name)]:
        await fn(conn)
        await conn.execute(sa.text("INSERT INTO schema_migrations VALUES (:n, 0)"), {"n": applied})


async def test_blank_database_migrates_to_tables(db: Database) -> None:
    def inspect(conn: sa.Connection) -> dict[str, set[str]]:
        insp = sa.inspect(conn)
        return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}

    async with db.engine.connect() as conn:
        found = await conn.run_sync(inspect)
        applied = (await conn.execute(sa.text("SELECT name FROM schema_migrations"))).scalars().all()
    expected = {t.name: {c.name for c in t.columns} for t in tables.metadata.sorted_tables}
    assert found == expected
    assert sorted(applied) == sorted(name for name, _ in MIGRATIONS)


async def test_migrate_is_idempotent(db: Database) -> None:
    assert await migrate(db.engine) == []


def test_migration_names_are_ordered_and_unique() -> None:
    names = [n for n, _ in MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(n.startswith(f"m{i + 1:03d}_") for i, n in enumerate(names))


async def test_sessions_reopen_keeps_rows_and_allows_a_reused_external_id(store_url: str) -> None:
    """m004 on a database that already holds sessions: rows kept, constraint gone."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(store_url)
    insert = sa.text(
        "INSERT INTO sessions (id, tenant_id, external_id, started_at, last_turn_at, done, "
        "turn_count) VALUES (:id, 't', 'run-1', :at, :at, :done, 1)")
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(
                "CREATE TABLE schema_migrations (name VARCHAR(128) PRIMARY KEY, applied_at FLOAT NOT NULL)"))
            for name, fn in MIGRATIONS[:3]:
                await fn(conn)
                await conn.execute(sa.text("INSERT INTO schema_migrations VALUES (:n, 0)"), {"n": name})
            await conn.execute(insert, {"id": "ses_old", "at": 1.0, "done": True})
        assert await migrate(engine) == [name for name, _ in MIGRATIONS[3:]]
        async with engine.begin() as conn:
            await conn.execute(insert, {"id": "ses_new", "at": 2.0, "done": False})
            rows = (await conn.execute(sa.text(
                "SELECT id, done, turn_count FROM sessions ORDER BY started_at"))).all()
        assert [(r[0], bool(r[1]), r[2]) for r in rows] == [("ses_old", True, 1), ("ses_new", False, 1)]
    finally:
        await engine.dispose()


async def test_key_limits_keep_existing_keys_on_the_default(store_url: str) -> None:
    """m008 on a database that already holds a key: the key still works, on the default limits."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from store.keys import KeyLimits, KeyStore, hash_key
    from store.settings import StoreSettings

    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            await _migrate_up_to(conn, "m008_key_limits")
            await conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES ('ten_a', 'acme', 0)"))
            await conn.execute(sa.text(
                "INSERT INTO api_keys (id, tenant_id, role, prefix, key_hash, created_at) "
                "VALUES ('key_old', 'ten_a', 'agent', 'molt-old', :h, 0)"), {"h": hash_key("molt-old-key")})
        assert "m008_key_limits" in await migrate(engine)
    finally:
        await engine.dispose()
    db = await Database.open(StoreSettings(url=store_url))
    try:
        keys = KeyStore(db)
        old = await keys.lookup("molt-old-key")
        assert old is not None and old.limits == KeyLimits()
        changed = await keys.set_limits("key_old", KeyLimits(rpm=10, concurrency=0))
        assert changed.limits == KeyLimits(rpm=10, tpm=None, concurrency=0)
        assert (await keys.list_keys())[0].limits == changed.limits
    finally:
        await db.close()


async def test_replicas_opening_a_blank_postgresql_together_all_start() -> None:
    """Found starting two proxies and a worker at once: one process's CREATE TABLE met the
    other's ("relation ... already exists") and it refused to start. Migrations now take a
    lock; each process opens the store, and every migration is applied once."""
    url = _pg_url()
    if not url:
        pytest.skip("PostgreSQL skipped: MOLT_TEST_PG_URL is not set (.ci/run starts a server)")
    try:
        await _reset_pg(url)  # a blank database
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        pytest.skip(f"PostgreSQL skipped: cannot reach {url.split('@')[-1]}: {exc}")
    engines = [create_engine(StoreSettings(url=url)) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(e) for e in engines))
        async with engines[0].connect() as conn:
            rows = (await conn.execute(sa.text("SELECT name FROM schema_migrations"))).scalars().all()
    finally:
        for e in engines:
            await e.dispose()
    assert sorted(n for names in applied for n in names) == sorted(n for n, _ in MIGRATIONS)
    assert sorted(rows) == sorted(n for n, _ in MIGRATIONS)


async def test_turns_written_before_m012_are_stamped_as_served(store_url: str) -> None:
    """m012 on a database that holds turns: each is stamped `recorded_at` = its `created_at`;
    a turn written after is stamped by the database's clock, however old its `created_at`."""
    import time

    from sqlalchemy.ext.asyncio import create_async_engine

    from store.records import TurnRecord
    from store.settings import StoreSettings
    from store.trajectories import TrajectoryStore

    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            await _migrate_up_to(conn, "m012_turn_recorded_at")
            await conn.execute(sa.text(
                "INSERT INTO turns (id, tenant_id, session_id, idx, turn_type, created_at, request_model, stream,"
                " request, status) VALUES ('turn_old', 'ten_a', 'ses_1', 0, 'main', 1000.5, 'm', false, '{}', 'ok')"))
        assert await migrate(engine) == ["m012_turn_recorded_at"]
    finally:
        await engine.dispose()
    db = await Database.open(StoreSettings(url=store_url))
    try:
        ts = TrajectoryStore(db)
        assert await ts.recorded_after("ten_a", 0.0) == [("turn_old", 1000.5)]
        before = time.time()
        await ts.write_turns([TurnRecord(id="turn_late", tenant_id="ten_a", session_id="ses_1", idx=1,
                                         turn_type="main", created_at=2000.0, request_model="m", stream=False,
                                         request={"messages": []})])
        (late, stamp), = await ts.recorded_after("ten_a", 1000.5)
        assert late == "turn_late" and stamp >= before - 1.0  # the database's clock, this machine's here
        assert await ts.newest_recorded_at("ten_a") == stamp
    finally:
        await db.close()
