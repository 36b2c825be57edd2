"""`molt keys create|list|revoke`."""

from __future__ import annotations

import click

from molt.cli.common import echo_json, settings_from, ts, with_db
from store.database import Database
from store.keys import AGENT, DEFAULT_TENANT, GLOBAL_ADMIN, TENANT_ADMIN, KeyInfo, KeyStore


def register(cli: click.Group) -> None:
    @cli.group()
    def keys() -> None:
        """API keys and tenants."""

    @keys.command("create")
    @click.option("--tenant", default=None,
                  help="Tenant the key belongs to (created if new; with --global: default).")
    @click.option("--name", default=None, help="A label for the key.")
    @click.option("--admin", is_flag=True, help="A tenant admin: admin routes, its own tenant only.")
    @click.option("--global", "global_", is_flag=True,
                  help="A global admin: admin routes for every tenant (as server.admin_key).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def create(ctx: click.Context, tenant: str | None, name: str | None, admin: bool,
               global_: bool, as_json: bool) -> None:
        """Create a key. It is printed once and stored only as a hash."""
        if tenant is None and not global_:
            raise click.UsageError("give --tenant NAME (or --global for a global admin key)")
        settings = settings_from(ctx)
        role = GLOBAL_ADMIN if global_ else TENANT_ADMIN if admin else AGENT

        async def run(db: Database) -> tuple[str, KeyInfo]:
            return await KeyStore(db).create_key(tenant or DEFAULT_TENANT, name=name, role=role)

        key, info = with_db(settings, run)
        if as_json:
            echo_json({"key": key, "id": info.id, "tenant": info.tenant, "role": info.role})
        else:
            click.echo(key)
            click.echo(f"(id {info.id}; tenant {info.tenant}; role {info.role}; "
                       "shown once, store it now)", err=True)

    @keys.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx: click.Context, as_json: bool) -> None:
        """List keys (prefixes only; keys are never stored in clear)."""
        rows = with_db(settings_from(ctx), lambda db: KeyStore(db).list_keys())
        if as_json:
            echo_json([
                {"id": k.id, "tenant": k.tenant, "name": k.name, "role": k.role, "prefix": k.prefix,
                 "created_at": k.created_at, "revoked_at": k.revoked_at} for k in rows
            ])
            return
        if not rows:
            click.echo("no keys: a proxy started now runs open (loopback only)")
        for k in rows:
            state = f"revoked {ts(k.revoked_at)}" if k.revoked_at else "live"
            click.echo(f"{k.id}  {k.prefix}…  tenant={k.tenant}  role={k.role}  {state}  {k.name or ''}")

    @keys.command("revoke")
    @click.argument("key_id")
    @click.pass_context
    def revoke(ctx: click.Context, key_id: str) -> None:
        """Revoke a key by id or prefix."""
        from store.errors import StoreError

        try:
            info = with_db(settings_from(ctx), lambda db: KeyStore(db).revoke(key_id))
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"revoked {info.id} ({info.prefix}…, tenant {info.tenant})")
