"""What CLI commands share: settings, running async store work, JSON output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from molt.config import ConfigError, load_settings
from store.database import Database
from store.errors import NotFound, StoreError
from store.keys import KeyStore
from store.settings import MoltSettings

T = TypeVar("T")


def settings_from(ctx: click.Context, overrides: dict[str, Any] | None = None) -> MoltSettings:
    root = ctx.find_root()
    path = (root.obj or {}).get("config")
    try:
        return load_settings(path, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def with_db(settings: MoltSettings, fn: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = await Database.open(settings.store)
        try:
            return await fn(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


async def tenant_id_of(db: Database, name: str | None) -> str | None:
    """The id of the tenant named `name` (None for None); NotFound when there is none."""
    if name is None:
        return None
    found = await KeyStore(db).tenant_by_name(name)
    if found is None:
        raise NotFound(f"no tenant {name!r}")
    return found.id


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def ts(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)
