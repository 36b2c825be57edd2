"""`molt doctor`: the effective settings (secrets masked) and reachability checks."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import click

from molt.cli.common import settings_from
from proxy.upstream.routing import Upstreams
from store.database import Database
from store.db import redact_url
from store.settings import MoltSettings


def masked(settings: MoltSettings) -> dict[str, Any]:
    data = json.loads(settings.model_dump_json())  # SecretStr renders as '**********'
    data["store"]["url"] = redact_url(settings.store.url)
    return data


async def _checks(settings: MoltSettings) -> list[tuple[str, bool, str]]:
    from molt.wiring import backend_factories

    out: list[tuple[str, bool, str]] = []
    try:
        db = await Database.open(settings.store)
        await db.ping()
        out.append(("store", True, f"{db.dialect} at {redact_url(settings.store.url)}"))
        await db.close()
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure
        out.append(("store", False, str(exc)))
    if settings.skills.chroma_url:
        out.append(await asyncio.to_thread(chroma_check, settings.skills.chroma_url))
    try:
        ups = Upstreams.from_routes(settings.models, factories=backend_factories(settings))
    except Exception as exc:  # noqa: BLE001
        out.append(("upstreams", False, str(exc)))
        return out
    for alias in ups.aliases():
        _, _, backend = ups.resolve(alias)
        route = settings.route(alias)
        if route is not None and route.api_key_env and not os.environ.get(route.api_key_env):
            out.append((f"model {alias}", False,
                        f"api_key_env names {route.api_key_env}, which is not set"))
            continue
        try:
            out.append((f"model {alias}", True, await backend.check()))
        except Exception as exc:  # noqa: BLE001
            out.append((f"model {alias}", False, str(exc)))
    await ups.aclose()
    return out


def chroma_check(url: str) -> tuple[str, bool, str]:
    """The Chroma server of `skills.chroma_url`: its heartbeat answers, or why not."""
    from store.skills.index import open_client

    try:
        beat = open_client(None, url).heartbeat()
    except Exception as exc:  # noqa: BLE001 - chromadb raises many unrelated types
        return ("chroma", False, f"{url}: {type(exc).__name__}: {exc}")
    return ("chroma", True, f"server at {url} (heartbeat {beat})")


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def doctor(ctx: click.Context, as_json: bool) -> None:
        """Print the effective settings and check the store, the Chroma server and upstreams."""
        settings = settings_from(ctx)
        checks = asyncio.run(_checks(settings))
        if as_json:
            click.echo(json.dumps({"settings": masked(settings), "checks": [
                {"name": n, "ok": ok, "detail": d} for n, ok, d in checks]}, indent=2))
        else:
            click.echo(json.dumps(masked(settings), indent=2))
            for name, ok, detail in checks:
                click.echo(f"{'ok ' if ok else 'FAIL'} {name}: {detail}")
        if not all(ok for _, ok, _ in checks):
            ctx.exit(1)
