"""`molt tenants settings`: a tenant's serving settings (TAFC)."""

from __future__ import annotations

import json
from typing import Any

import click

from molt.cli.common import echo_json, settings_from, with_db
from store.database import Database
from store.errors import StoreError
from store.keys import KeyStore
from store.tenant_tafc import read_tenant_tafc, write_tenant_tafc


def _value(raw: str) -> Any:
    """`parameter` -> "parameter"; `0.5` -> 0.5; `["a","b"]` -> a list (JSON where it parses)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


@click.group()
def tenants() -> None:
    """Tenants and their serving settings."""


@tenants.command("settings")
@click.argument("tenant")
@click.option("--set", "assignments", multiple=True, metavar="tafc.KEY=VALUE",
              help="Change a setting, e.g. --set tafc.mode=parameter --set tafc.tau=0.5 "
                   "--set 'tafc.tools=[\"book_table\"]'. Serving picks it up within a second.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def settings_cmd(ctx: click.Context, tenant: str, assignments: tuple[str, ...],
                 as_json: bool) -> None:
    """Show (or change) a tenant's effective TAFC settings."""
    settings = settings_from(ctx)
    values: dict[str, Any] = {}
    for a in assignments:
        key, sep, raw = a.partition("=")
        section, _, name = key.partition(".")
        if not sep or section != "tafc" or not name:
            raise click.BadParameter(f"{a!r}: expected tafc.KEY=VALUE", param_hint="--set")
        values[name] = _value(raw)

    async def run(db: Database) -> dict[str, Any]:
        t = await KeyStore(db).tenant_by_name(tenant)
        if t is None:
            raise click.ClickException(f"no tenant {tenant!r}")
        if values:
            eff = await write_tenant_tafc(db, t.id, values, settings.tafc)
        else:
            eff = await read_tenant_tafc(db, t.id, settings.tafc)
        return {"tenant": tenant, "tafc": eff.model_dump()}

    try:
        out = with_db(settings, run)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(out)
    else:
        for k, v in out["tafc"].items():
            click.echo(f"tafc.{k} = {json.dumps(v)}")


def register(cli: click.Group) -> None:
    cli.add_command(tenants)
