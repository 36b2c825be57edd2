"""`molt keys create|list|revoke|limit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from molt.cli.common import echo_json, settings_from, ts, with_db
from store.errors import StoreError
from store.keys import (
    AGENT,
    DEFAULT_TENANT,
    GLOBAL_ADMIN,
    TENANT_ADMIN,
    KeyInfo,
    KeyLimits,
    KeyStore,
)

_LIMIT_HELP = "(0: no limit for this key; unset: the server's [limits] default)"


def _limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name, what in (("concurrency", "Most requests in flight at once"),
                       ("tpm", "Tokens per minute (prompt + completion)"),
                       ("rpm", "Requests per minute")):
        fn = click.option(f"--{name}", type=click.IntRange(min=0), default=None,
                          help=f"{what} {_LIMIT_HELP}.")(fn)
    return fn


def _limits_text(limits: KeyLimits) -> str:
    parts = [f"{k}={'none' if v == 0 else v}" for k, v in limits.as_dict().items() if v is not None]
    return " ".join(parts) if parts else "limits=default"


def _run(ctx: click.Context, fn: Callable[[KeyStore], Any]) -> Any:
    try:
        return with_db(settings_from(ctx), lambda db: fn(KeyStore(db)))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def keys() -> None:
    """API keys and tenants."""


@keys.command("create")
@click.option("--tenant", default=None,
              help="Tenant the key belongs to (created if new; with --global: default).")
@click.option("--name", default=None, help="A label for the key.")
@click.option("--admin", is_flag=True, help="A tenant admin: admin routes, its own tenant only.")
@click.option("--global", "global_", is_flag=True,
              help="A global admin: admin routes for every tenant (as server.admin_key).")
@_limit_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def create(ctx: click.Context, tenant: str | None, name: str | None, admin: bool,
           global_: bool, rpm: int | None, tpm: int | None, concurrency: int | None,
           as_json: bool) -> None:
    """Create a key. It is printed once and stored only as a hash."""
    if tenant is None and not global_:
        raise click.UsageError("give --tenant NAME (or --global for a global admin key)")
    role = GLOBAL_ADMIN if global_ else TENANT_ADMIN if admin else AGENT
    limits = KeyLimits(rpm, tpm, concurrency)
    made: tuple[str, KeyInfo] = _run(ctx, lambda ks: ks.create_key(
        tenant or DEFAULT_TENANT, name=name, role=role, limits=limits))
    key, info = made
    if as_json:
        echo_json({"key": key, "id": info.id, "tenant": info.tenant, "role": info.role,
                   "limits": info.limits.as_dict()})
    else:
        click.echo(key)
        click.echo(f"(id {info.id}; tenant {info.tenant}; role {info.role}; "
                   f"{_limits_text(info.limits)}; shown once, store it now)", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List keys (prefixes only; keys are never stored in clear)."""
    rows: list[KeyInfo] = _run(ctx, lambda ks: ks.list_keys())
    if as_json:
        echo_json([
            {"id": k.id, "tenant": k.tenant, "name": k.name, "role": k.role, "prefix": k.prefix,
             "created_at": k.created_at, "revoked_at": k.revoked_at,
             "limits": k.limits.as_dict()} for k in rows
        ])
        return
    if not rows:
        click.echo("no keys: a proxy started now runs open (loopback only)")
    for k in rows:
        state = f"revoked {ts(k.revoked_at)}" if k.revoked_at else "live"
        click.echo(f"{k.id}  {k.prefix}…  tenant={k.tenant}  role={k.role}  {state}  "
                   f"{_limits_text(k.limits)}  {k.name or ''}".rstrip())


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by id or prefix."""
    info: KeyInfo = _run(ctx, lambda ks: ks.revoke(key_id))
    click.echo(f"revoked {info.id} ({info.prefix}…, tenant {info.tenant})")


@keys.command("limit")
@click.argument("key_id")
@_limit_options
@click.pass_context
def limit(ctx: click.Context, key_id: str, rpm: int | None, tpm: int | None,
          concurrency: int | None) -> None:
    """Set a key's own rate limits (by id or prefix); the limits not given go back to the
    default. Running proxies apply them within `server.key_cache_ttl_s`."""
    info: KeyInfo = _run(ctx, lambda ks: ks.set_limits(key_id, KeyLimits(rpm, tpm, concurrency)))
    click.echo(f"{info.id} ({info.prefix}…, tenant {info.tenant}): {_limits_text(info.limits)}")


def register(cli: click.Group) -> None:
    cli.add_command(keys)
