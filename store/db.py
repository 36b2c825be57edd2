"""Opening the database: SQLite in WAL mode by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from store.settings import StoreSettings


def _sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def create_engine(settings: StoreSettings) -> AsyncEngine:
    """An async engine for the configured URL; SQLite files get WAL and a busy timeout."""
    url = sa.make_url(settings.url)
    kwargs: dict[str, Any] = {"echo": settings.echo}
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    elif url.get_backend_name() == "postgresql":
        kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
    # hide_parameters: an error's text never carries the statement's parameters (prompts,
    # feedback text, key hashes), wherever it is logged.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def redact_url(url: str) -> str:
    """The URL with its password hidden, for printing."""
    return sa.make_url(url).render_as_string(hide_password=True)
