"""`molt serve`: proxy, evolver loop and scheduler in one process."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from molt.cli.common import settings_from
from store.database import Database
from store.keys import KeyStore
from store.settings import MoltSettings


async def _has_keys(settings: MoltSettings) -> bool:
    db = await Database.open(settings.store)
    try:
        return await KeyStore(db).any_live_keys()
    finally:
        await db.close()


def check_exposure(settings: MoltSettings) -> None:
    """Refuse to serve an open proxy on a non-loopback address."""
    if settings.server.is_loopback():
        return
    if settings.server.admin_key is None and not asyncio.run(_has_keys(settings)):
        raise click.ClickException(
            f"refusing to bind {settings.server.host}: no API keys exist, so anyone on the "
            "network could use the proxy. Create one with `molt keys create --tenant NAME` "
            "or bind 127.0.0.1."
        )


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
    @click.option("--port", type=int, default=None, help="Port (default 8787).")
    @click.option("--log-level", default="info", show_default=True)
    @click.pass_context
    def serve(ctx: click.Context, host: str | None, port: int | None, log_level: str) -> None:
        """Run the proxy (and the learning loops) until SIGTERM or Ctrl-C."""
        import uvicorn

        from molt.wiring import build_app, with_default_model

        overrides: dict[str, Any] = {"server": {}}
        if host:
            overrides["server"]["host"] = host
        if port:
            overrides["server"]["port"] = port
        settings = with_default_model(settings_from(ctx, overrides))
        check_exposure(settings)
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        app = build_app(settings)
        click.echo(
            f"molt serving on http://{settings.server.host}:{settings.server.port}/v1 "
            f"(models: {', '.join(r.alias for r in settings.models) or 'none'})",
            err=True,
        )
        uvicorn.run(
            app, host=settings.server.host, port=settings.server.port, loop="uvloop",
            http="httptools", log_level=log_level, timeout_graceful_shutdown=30,
            access_log=False,
        )
