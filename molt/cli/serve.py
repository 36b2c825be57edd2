"""`molt serve`, `molt proxy` and `molt worker`: one app (molt/wiring.py) in three roles.

`molt serve` runs everything in one process. To scale out, run several `molt proxy`
replicas (requests only) and one `molt worker` (evolver loop, training scheduler,
rollback watch), all on one store (PostgreSQL), one Chroma server
(`skills.chroma_url`) and one registry folder; they meet only there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from molt.cli.common import settings_from
from store.database import Database
from store.keys import KeyStore
from store.settings import MoltSettings

if TYPE_CHECKING:
    from molt.wiring import Role

# The worker's default port (its /healthz), beside a proxy's 8787 on one host.
WORKER_PORT = 8788


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


def claim_index(settings: MoltSettings) -> None:
    """A serving process takes its embedded Chroma folder now, for a clear refusal."""
    cfg = settings.skills
    if not cfg.enabled or cfg.chroma_url:
        return
    from store.skills.errors import IndexInUse
    from store.skills.index_lock import claim

    try:
        claim(cfg.index_path(settings.data_dir))
    except IndexInUse as exc:
        raise click.ClickException(str(exc)) from exc


def run(ctx: click.Context, role: Role, *, host: str | None, port: int | None,
        log_level: str, tenants: Sequence[str] = (), replay_url: str | None = None) -> None:
    """Build the app for `role` and serve it with uvicorn until SIGTERM or Ctrl-C."""
    import uvicorn

    from molt.wiring import WiringError, build_app, with_default_model

    overrides: dict[str, Any] = {"server": {}}
    if host:
        overrides["server"]["host"] = host
    if port:
        overrides["server"]["port"] = port
    if replay_url:
        overrides["evolver"] = {"replay_url": replay_url}
    settings = with_default_model(settings_from(ctx, overrides))
    if role != "worker":
        check_exposure(settings)
        claim_index(settings)
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build_app(settings, role=role, tenants=tenants, settle_heap=True)
    except WiringError as exc:
        raise click.ClickException(str(exc)) from exc
    where = f"http://{settings.server.host}:{settings.server.port}"
    if role == "worker":
        click.echo(f"molt worker for {', '.join(tenants) or 'all tenants'}, replaying through "
                   f"{settings.evolver.replay_url}; health on {where}/healthz", err=True)
    else:
        click.echo(f"molt {'proxy' if role == 'proxy' else 'serving'} on {where}/v1 "
                   f"(models: {', '.join(r.alias for r in settings.models) or 'none'})", err=True)
    uvicorn.run(
        app, host=settings.server.host, port=settings.server.port, loop="uvloop",
        http="httptools", log_level=log_level, timeout_graceful_shutdown=30,
        access_log=False,
    )


def _tenant_list(value: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (value or "").split(",") if t.strip())


def register(cli: click.Group) -> None:
    host_opt = click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
    level_opt = click.option("--log-level", default="info", show_default=True)

    @cli.command()
    @host_opt
    @click.option("--port", type=int, default=None, help="Port (default 8787).")
    @level_opt
    @click.pass_context
    def serve(ctx: click.Context, host: str | None, port: int | None, log_level: str) -> None:
        """Run the proxy and the learning loops in one process (the default)."""
        run(ctx, "all", host=host, port=port, log_level=log_level)

    @cli.command()
    @host_opt
    @click.option("--port", type=int, default=None, help="Port (default 8787).")
    @level_opt
    @click.pass_context
    def proxy(ctx: click.Context, host: str | None, port: int | None, log_level: str) -> None:
        """Serve requests only: no evolver loop, no scheduler, no trainer (run `molt worker`)."""
        run(ctx, "proxy", host=host, port=port, log_level=log_level)

    @cli.command()
    @host_opt
    @click.option("--port", type=int, default=WORKER_PORT, show_default=True,
                  help="Port of the worker's /healthz and /metrics.")
    @click.option("--tenants", default=None, help="Comma-separated tenant names (default: all).")
    @click.option("--replay-url", default=None,
                  help="A `molt proxy`'s /v1 URL the evolver replays through "
                       "(evolver.replay_url).")
    @level_opt
    @click.pass_context
    def worker(ctx: click.Context, host: str | None, port: int, tenants: str | None,
               replay_url: str | None, log_level: str) -> None:
        """Run the evolver loop, the training scheduler and the rollback watch; no proxy."""
        run(ctx, "worker", host=host, port=port, log_level=log_level,
            tenants=_tenant_list(tenants), replay_url=replay_url)
