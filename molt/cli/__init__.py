"""`molt`: the command line."""

from __future__ import annotations

import click

from molt.cli import (
    bench,
    connect,
    doctor,
    evolve,
    export,
    feedback,
    keys,
    serve,
    sessions,
    skills,
    tenants,
    tools,
    train,
    versions,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", envvar="MOLT_CONFIG", default=None, help="molt.toml to read.")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """molt: a self-improving proxy for LLM agents."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


for module in (serve, keys, sessions, feedback, doctor, bench, skills, versions, evolve, train,
               tenants, tools, export, connect):
    module.register(cli)


def main() -> None:
    cli(prog_name="molt")
