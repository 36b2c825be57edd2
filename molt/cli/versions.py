"""`molt versions list|show|promote|rollback|rm`: the weight-version registry.

Promotion and rollback go through `Registry.promote`, which validates the
artifact against the base weights serving uses for it before the `active`
pointer flips: the route's `local` folder, from the same settings `molt serve`
builds (with no molt.toml and no models, the shipped tiny policy as `tiny`), so
the CLI refuses exactly what the REST route and serving refuse. A refusal exits
1 with the reason and leaves the pointer alone. Running `molt serve` processes
notice the new pointer within a second and hot-swap; one that still cannot load
the version points `active` back (see `proxy.upstream.versions`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from molt.cli.common import echo_json, settings_from, ts
from store.errors import StoreError
from store.registry import Promotion, Registry, VersionMeta, served_base_dirs
from store.settings import MoltSettings


def _registry(settings: MoltSettings) -> Registry:
    return Registry.from_settings(settings)


def _base(reg: Registry, tenant: str, base: str | None) -> str:
    if base:
        return base
    bases = reg.bases(tenant)
    if len(bases) == 1:
        return bases[0]
    if not bases:
        raise click.ClickException(f"tenant {tenant!r} has no versions in {reg.root}")
    raise click.ClickException(f"tenant {tenant!r} has several bases; pick one with --base: "
                               + ", ".join(bases))


def _flip(ctx: click.Context, tenant: str, base: str | None,
          op: Callable[[Registry, str, Path | None], Promotion]) -> tuple[Promotion, str]:
    """Run a promotion or rollback on the resolved base; a refusal is a clean CLI error."""
    from molt.wiring import with_default_model  # the models `molt serve` would serve

    settings = with_default_model(settings_from(ctx))
    reg = _registry(settings)
    b = _base(reg, tenant, base)
    base_dir = served_base_dirs(settings.models).get(b)
    if base_dir is None:
        click.echo(f"note: no local model route serves base {b!r}; only the artifact's own "
                   "files are checked", err=True)
    try:
        return op(reg, b, base_dir), b
    except StoreError as exc:
        raise click.ClickException(f"refused: {exc}") from exc


def _line(m: VersionMeta, active: str | None) -> str:
    mark = "*" if m.version == active else " "
    gate = (m.eval_gate or {}).get("passed")
    gate_s = "" if gate is None else ("  gate=pass" if gate else "  gate=FAIL")
    return (f"{mark} {m.version}  {m.kind:<9} {m.status:<11} {ts(m.created)}"
            f"  parent={m.parent or '-'}{gate_s}")


def _promotion_json(p: Promotion) -> dict[str, Any]:
    return {"tenant": p.tenant, "base": p.base, "action": p.action, "previous": p.previous,
            "active": p.active}


def register(cli: click.Group) -> None:
    tenant_opt = click.option("--tenant", default="default", show_default=True)
    base_opt = click.option("--base", default=None, help="Base model folder name in the registry.")
    json_opt = click.option("--json", "as_json", is_flag=True)

    @cli.group()
    def versions() -> None:
        """Weight versions (LoRA adapters, TTT deltas) and the active pointer."""

    @versions.command("list")
    @tenant_opt
    @base_opt
    @json_opt
    @click.pass_context
    def list_(ctx: click.Context, tenant: str, base: str | None, as_json: bool) -> None:
        """Every version of each base, newest last; * marks the active one."""
        reg = _registry(settings_from(ctx))
        try:
            bases = [base] if base else reg.bases(tenant)
            data = [(b, reg.active(tenant, b), reg.versions(tenant, b)) for b in bases]
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            echo_json([{"tenant": tenant, "base": b, "active": active,
                        "versions": [m.to_dict() for m in metas]} for b, active, metas in data])
            return
        if not data:
            click.echo(f"no versions for tenant {tenant} in {reg.root}")
        for b, active, metas in data:
            click.echo(f"{tenant}/{b}  active={active or 'base weights'}")
            for m in metas:
                click.echo("  " + _line(m, active))

    @versions.command("show")
    @click.argument("version")
    @tenant_opt
    @base_opt
    @json_opt
    @click.pass_context
    def show(ctx: click.Context, version: str, tenant: str, base: str | None, as_json: bool) -> None:
        """One version's meta.json."""
        reg = _registry(settings_from(ctx))
        try:
            meta = reg.get(tenant, _base(reg, tenant, base), version)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            echo_json(meta.to_dict())
            return
        for k, v in meta.to_dict().items():
            click.echo(f"{k:>16}: {ts(v) if k == 'created' else v}")

    @versions.command("promote")
    @click.argument("version")
    @tenant_opt
    @base_opt
    @click.option("--reason", default=None)
    @json_opt
    @click.pass_context
    def promote(ctx: click.Context, version: str, tenant: str, base: str | None,
                reason: str | None, as_json: bool) -> None:
        """Validate VERSION against its base and make it the active one."""
        p, b = _flip(ctx, tenant, base, lambda reg, b, base_dir: reg.promote(
            tenant, b, version, base_dir=base_dir, reason=reason))
        if as_json:
            echo_json(_promotion_json(p))
        else:
            click.echo(f"{tenant}/{b}: {p.previous or 'base weights'} -> {p.active}")

    @versions.command("rollback")
    @click.option("--to", "to", default=None,
                  help="Version to return to, or 'base' (default: the previous one).")
    @tenant_opt
    @base_opt
    @click.option("--reason", default=None)
    @json_opt
    @click.pass_context
    def rollback(ctx: click.Context, to: str | None, tenant: str, base: str | None,
                 reason: str | None, as_json: bool) -> None:
        """Return to the previously active version (marks the current one rolled_back)."""
        p, b = _flip(ctx, tenant, base, lambda reg, b, base_dir: reg.rollback(
            tenant, b, to, base_dir=base_dir, reason=reason))
        if as_json:
            echo_json(_promotion_json(p))
        else:
            click.echo(f"{tenant}/{b}: rolled back {p.previous} -> {p.active}")

    @versions.command("rm")
    @click.argument("version")
    @tenant_opt
    @base_opt
    @json_opt
    @click.pass_context
    def rm(ctx: click.Context, version: str, tenant: str, base: str | None, as_json: bool) -> None:
        """Delete a version that is not active."""
        reg = _registry(settings_from(ctx))
        b = _base(reg, tenant, base)
        try:
            reg.remove(tenant, b, version)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            echo_json({"deleted": True, "tenant": tenant, "base": b, "version": version})
        else:
            click.echo(f"deleted {tenant}/{b} {version}")
