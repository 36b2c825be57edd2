"""`molt connect AGENT`: what an agent needs to go through molt, with a key for its tenant.

The default output is shell: `eval "$(molt connect claude-code --tenant acme)"` sets the
variables, and the code lines follow as comments. `--json` gives the same as data.
"""

from __future__ import annotations

import shlex
import textwrap
from dataclasses import dataclass

import click

from molt.cli.common import echo_json, settings_from, with_db
from molt.connect import AGENTS, Recipe, Target, recipe
from store.database import Database
from store.keys import AGENT, KeyStore
from store.settings import MoltSettings

# Any non-empty key: SDKs refuse to start without one, and an open proxy reads none.
OPEN_KEY = "molt-open"


@dataclass(frozen=True, slots=True)
class KeyChoice:
    key: str
    tenant: str | None  # None: the proxy runs open (no keys), every call is tenant default
    minted: str | None = None  # the id of a key minted now
    first: bool = False  # the first live key: the proxy stops running open


def default_url(settings: MoltSettings) -> str:
    """The proxy's root URL as seen from this machine (a wildcard bind is reached on loopback)."""
    host = settings.server.host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


def default_model(settings: MoltSettings) -> str:
    from molt.wiring import with_default_model

    models = with_default_model(settings).models
    if not models:
        raise click.ClickException("no model is configured: add a [[models]] route to molt.toml")
    return models[0].alias


async def choose_key(db: Database, settings: MoltSettings, agent: str, tenant: str | None,
                     key: str | None, *, key_from_env: bool = False) -> KeyChoice:
    """The key to print: `key` if given (checked live, and of `tenant`), else one minted for
    `tenant`, else none where the proxy runs open. A $MOLT_API_KEY of another tenant than
    an explicit --tenant (or a dead one) is passed over: a key is minted, nothing refused."""
    ks = KeyStore(db)
    info = None if key is None else await ks.lookup(key)
    if key is not None and info is not None and tenant in (None, info.tenant):
        return KeyChoice(key, info.tenant)
    if key is not None and (tenant is None or not key_from_env):
        where = "$MOLT_API_KEY" if key_from_env else "--key"
        if info is None:
            raise click.ClickException(f"{where} is not a live key of this store")
        raise click.ClickException(f"--key belongs to tenant {info.tenant!r}, not {tenant!r}")
    keys_on = settings.server.admin_key is not None or await ks.any_live_keys()
    if tenant is None:
        if keys_on:
            raise click.ClickException(
                "keys are on: give --tenant NAME (a key is minted for it) or --key KEY")
        if not settings.server.is_loopback():
            raise click.ClickException(
                f"no API keys exist and the proxy binds {settings.server.host}, so it refuses "
                "to serve: give --tenant NAME to mint the first key")
        return KeyChoice(OPEN_KEY, None)
    clear, info = await ks.create_key(tenant, name=f"molt connect {agent}", role=AGENT)
    return KeyChoice(clear, info.tenant, minted=info.id, first=not keys_on)


def _shell(r: Recipe, t: Target, choice: KeyChoice) -> str:
    who = f"tenant {choice.tenant}" if choice.tenant else "open proxy, tenant default"
    lines = [f"# {r.title}", f"# molt at {t.url} ({who}; model {t.model})"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in r.env.items()]
    lines += ["#", f"# In {r.code_where}:"]
    lines += [f"#   {line}".rstrip() for line in r.code.splitlines()]
    for note in r.notes:
        lines += ["#", *textwrap.wrap(note, 92, initial_indent="# ", subsequent_indent="# ")]
    return "\n".join(lines)


def _tell(choice: KeyChoice) -> None:
    if choice.minted:
        click.echo(f"(minted key {choice.minted} for tenant {choice.tenant}: printed once, "
                   "stored only as a hash; pass it as --key to reuse it)", err=True)
    if choice.first:
        click.echo("warning: this is the first API key, so the proxy no longer runs open: "
                   "from now on every client needs a key", err=True)
    if choice.tenant is None:
        click.echo("(no API keys exist: the proxy runs open on loopback and any key works; "
                   "give --tenant NAME to mint one)", err=True)


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("agent", type=click.Choice(AGENTS))
    @click.option("--tenant", default=None,
                  help="Mint an agent key for this tenant (created if new).")
    @click.option("--key", default=None, envvar="MOLT_API_KEY",
                  help="Reuse this key instead of minting one (default: $MOLT_API_KEY).")
    @click.option("--url", default=None,
                  help="molt's root URL as the agent reaches it (default: from [server]).")
    @click.option("--model", default=None,
                  help="The model alias the agent asks for (default: the first [[models]]).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def connect(ctx: click.Context, agent: str, tenant: str | None, key: str | None,
                url: str | None, model: str | None, as_json: bool) -> None:
        """Print what AGENT needs to go through molt: variables and code or config lines.

        The output is shell (exports, then comments), so that

        \b
          eval "$(molt connect claude-code --tenant acme)"

        sets the variables in the current shell.
        """
        settings = settings_from(ctx)
        aliases = [m.alias for m in settings.models]
        if model is not None and aliases and model not in aliases:
            raise click.BadParameter(f"{model!r} is not a model alias of this molt "
                                     f"({', '.join(aliases)})", param_hint="--model")
        chosen_model = model or default_model(settings)
        from_env = ctx.get_parameter_source("key") == click.core.ParameterSource.ENVIRONMENT
        choice = with_db(settings, lambda db: choose_key(db, settings, agent, tenant, key,
                                                         key_from_env=from_env))
        target = Target(url=(url or default_url(settings)).rstrip("/"), key=choice.key,
                        model=chosen_model)
        r = recipe(agent, target)
        if as_json:
            echo_json({"agent": r.agent, "title": r.title, "url": target.url,
                       "base_url": target.v1, "model": target.model, "tenant": choice.tenant,
                       "key": choice.key, "key_id": choice.minted, "env": r.env,
                       "code": r.code, "code_where": r.code_where, "notes": list(r.notes)})
        else:
            click.echo(_shell(r, target, choice))
        _tell(choice)
