"""`molt tools overlays`: the tool description rewrites served per tenant (list, revert)."""

from __future__ import annotations

from typing import Any

import click

from molt.cli.common import echo_json, settings_from, tenant_id_of, ts, with_db
from store.database import Database
from store.tool_overlays import ToolOverlayStore


@click.group()
def tools() -> None:
    """The agent's tools as molt serves them."""


@tools.group()
def overlays() -> None:
    """Rewritten parameter descriptions laid over a tenant's tool schemas (the evolver's)."""


async def _tenant_id(db: Database, tenant: str) -> str:
    tid = await tenant_id_of(db, tenant)
    assert tid is not None
    return tid


@overlays.command("list")
@click.option("--tenant", default="default", show_default=True)
@click.option("--status", default=None, help="active, candidate, superseded, reverted or rejected.")
@click.option("--tool", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx: click.Context, tenant: str, status: str | None, tool: str | None, as_json: bool) -> None:
    """Every version of every overlay of a tenant (`--status active`: what is served)."""
    settings = settings_from(ctx)

    async def run(db: Database) -> list[dict[str, Any]]:
        tid = await _tenant_id(db, tenant)
        return [o.as_dict() for o in await ToolOverlayStore(db).overlays(tid, status=status, tool=tool)]

    rows = with_db(settings, run)  # a store error (no such tenant) is a ClickException
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no tool overlays")
    for o in rows:
        click.echo(f"{o['id']}  {o['tool']}.{o['param']} v{o['version']}  {o['status']:<10}  "
                   f"{ts(o['created_at'])}  {o['description']}")


@overlays.command("revert")
@click.argument("overlay_id")
@click.option("--tenant", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def revert_cmd(ctx: click.Context, overlay_id: str, tenant: str, as_json: bool) -> None:
    """Stop serving an active overlay; the version it replaced (or the agent's own words) is
    served again. Serving picks it up within a second."""
    settings = settings_from(ctx)

    async def run(db: Database) -> dict[str, Any]:
        tid = await _tenant_id(db, tenant)
        reverted, restored = await ToolOverlayStore(db).revert(tid, overlay_id)
        return {"reverted": reverted.as_dict(), "restored": restored.as_dict() if restored else None}

    out = with_db(settings, run)
    if as_json:
        echo_json(out)
        return
    r = out["reverted"]
    click.echo(f"reverted {r['id']} ({r['tool']}.{r['param']} v{r['version']})")
    if out["restored"]:
        click.echo(f"serving {out['restored']['id']} (v{out['restored']['version']}) again")
    else:
        click.echo("serving the agent's own description again")


def register(cli: click.Group) -> None:
    cli.add_command(tools)
