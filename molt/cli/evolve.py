"""`molt evolve --now`, `molt evolve proposals`, `molt evolve contexts`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from molt.cli.common import echo_json, settings_from, ts, with_db
from store.database import Database
from store.evolution import EvolutionStore
from store.keys import KeyStore


def register(cli: click.Group) -> None:
    @cli.group(invoke_without_command=True)
    @click.option("--now", is_flag=True, help="Run one evolution now.")
    @click.option("--tenant", default="default", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def evolve(ctx: click.Context, now: bool, tenant: str, as_json: bool) -> None:
        """Learn skills and the context block from recent failures.

        Replays go through the running proxy (evolver.replay_url, default the
        configured server address), so `molt serve` must be up.
        """
        if ctx.invoked_subcommand is not None:
            return
        if not now:
            click.echo(ctx.get_help())
            return
        settings = settings_from(ctx)

        async def run(db: Database) -> Any:
            from molt.evolver_service import build_evolver
            from store.skills import SkillLibrary

            library = SkillLibrary(db, settings.skills, settings.data_dir)
            ev = build_evolver(settings, db, library)
            try:
                return await ev.evolve(tenant, trigger="cli")
            finally:
                await ev.replayer.aclose()  # type: ignore[attr-defined]

        report = with_db(settings, run)
        if as_json:
            echo_json(dataclasses.asdict(report))
            return
        click.echo(f"evolution {report.evolution_id}: {report.status}; {report.failures} failure cases "
                   f"in {report.groups} groups")
        for p in report.proposals:
            click.echo(f"  {p['status']:>11}  {p['id']}  {', '.join(p.get('skills', []))}  {p['reason']}")
        if report.context:
            click.echo(f"  context: {report.context.get('reason')}")

    @evolve.command("proposals")
    @click.option("--tenant", default="default", show_default=True)
    @click.option("--status", default=None)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def proposals(ctx: click.Context, tenant: str, status: str | None, as_json: bool) -> None:
        """Skill edits the evolver proposed, with the gate's scores."""

        async def run(db: Database) -> list[Any]:
            ten = await KeyStore(db).tenant_by_name(tenant)
            return [] if ten is None else await EvolutionStore(db).proposals(ten.id, status=status)

        rows = with_db(settings_from(ctx), run)
        if as_json:
            echo_json([dataclasses.asdict(p) for p in rows])
            return
        for p in rows:
            names = ", ".join(str(op.get("name")) for op in p.ops)
            click.echo(f"{ts(p.created_at)}  {p.status:>11}  {p.source:>7}  {p.id}  {names}")
            click.echo(f"    {p.reason or ''}")
            if p.scores:
                click.echo(f"    gate: {json.dumps(p.scores)}")

    @evolve.command("contexts")
    @click.option("--tenant", default="default", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def contexts(ctx: click.Context, tenant: str, as_json: bool) -> None:
        """Context block versions (fast weights) and their scores."""

        async def run(db: Database) -> list[Any]:
            ten = await KeyStore(db).tenant_by_name(tenant)
            return [] if ten is None else await EvolutionStore(db).contexts(ten.id)

        rows = with_db(settings_from(ctx), run)
        if as_json:
            echo_json([dataclasses.asdict(c) for c in rows])
            return
        for c in rows:
            click.echo(f"v{c.version}  {c.status:>9}  {ts(c.created_at)}  {json.dumps(c.scores) if c.scores else ''}")
            for line in c.text.splitlines():
                click.echo(f"    {line}")
