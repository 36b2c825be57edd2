"""A blank database migrated to head has exactly the schema the code queries."""

from __future__ import annotations

import sqlalchemy as sa

from store import tables
from store.database import Database
from store.migrations import MIGRATIONS, migrate


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
