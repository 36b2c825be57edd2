"""`molt skills ...`: read and edit a tenant's skill library.

Works directly on the store and the library files, no server needed; a
running proxy notices the new generation within its poll interval (and at
the latest on the next new task).
"""

from __future__ import annotations

import getpass
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from molt.cli.common import echo_json, settings_from, ts, with_db
from store.database import Database
from store.registry import Registry
from store.skills.library import SkillLibrary
from store.skills.revisions import Revision, unified_diff
from store.skills.skillfile import Skill, parse_skill, render_skill_file
from store.skills.tenant_settings import write_tenant_settings

T = TypeVar("T")


def _author() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(ctx: click.Context, fn: Callable[[SkillLibrary], Awaitable[T]]) -> T:
    settings = settings_from(ctx)
    tenant = ctx.obj["skills_tenant"]

    async def go(db: Database) -> T:
        lib = SkillLibrary(db, settings.skills, settings.data_dir)
        await lib.ensure_seeded(tenant)
        report = await lib.sync_disk(tenant)
        for err in report.errors:
            click.echo(f"warning: {err} (the last good revision is kept)", err=True)
        return await fn(lib)

    return with_db(settings, go)


def _rev_line(r: Revision) -> str:
    reason = f"  {r.reason}" if r.reason else ""
    return (f"{r.id}  {ts(r.created_at)}  {r.name:<28} {r.action:<8} gen={r.generation:<4} "
            f"{r.author}{reason}")


def _print_rev(r: Revision | None, as_json: bool, what: str) -> None:
    if as_json:
        echo_json(r.as_dict() if r else None)
    elif r is None:
        click.echo(f"{what}: nothing changed")
    else:
        click.echo(f"{what}: {r.name} -> revision {r.id} (generation {r.generation})")


def register(cli: click.Group) -> None:
    @cli.group()
    @click.option("--tenant", default="default", show_default=True, help="Whose library.")
    @click.pass_context
    def skills(ctx: click.Context, tenant: str) -> None:
        """The skill library: SKILL.md files with a revision history."""
        ctx.obj["skills_tenant"] = tenant

    @skills.command("list")
    @click.option("--status", type=click.Choice(["active", "quarantined", "retired"]))
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx: click.Context, status: str | None, as_json: bool) -> None:
        """Every skill with its status and current revision."""
        tenant = ctx.obj["skills_tenant"]

        async def run(lib: SkillLibrary) -> tuple[int, list[Any]]:
            return await lib.generation(tenant), list((await lib.current(tenant)).values())

        gen, rows = _run(ctx, run)
        rows = [s for s in rows if status is None or s.skill.status == status]
        # skills an active weight version carries: serving leaves them out of its requests
        inside = Registry(settings_from(ctx).registry_root()).internalized_by_active(tenant)
        if as_json:
            echo_json({"tenant": tenant, "generation": gen, "skills": [
                {"name": s.name, "description": s.skill.description, "status": s.skill.status,
                 "origin": s.skill.origin, "category": s.skill.category,
                 "revision": s.revision, "content_hash": s.content_hash,
                 "internalized_in": inside.get(s.name, [])} for s in rows]})
            return
        click.echo(f"tenant {tenant}: generation {gen}, {len(rows)} skills")
        for s in rows:
            where = f"  (internalized in {', '.join(inside[s.name])})" if s.name in inside else ""
            click.echo(f"  {s.name:<32} {s.skill.status:<11} {s.skill.origin:<7} "
                       f"{s.skill.description[:70]}{where}")

    @skills.command()
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def show(ctx: click.Context, name: str, as_json: bool) -> None:
        """A skill's SKILL.md as served now."""
        tenant = ctx.obj["skills_tenant"]

        async def run(lib: SkillLibrary) -> Revision:
            cur = await lib.get(tenant, name)
            return await lib.revision(tenant, cur.revision)

        rev = _run(ctx, run)
        if as_json:
            echo_json(rev.as_dict(with_content=True))
        else:
            click.echo(rev.content or "", nl=False)

    @skills.command()
    @click.argument("file", required=False, type=click.Path(exists=True, path_type=Path))
    @click.option("--name")
    @click.option("--description")
    @click.option("--body", help="Markdown body (or use FILE).")
    @click.option("--category")
    @click.option("--tools", help="Comma-separated tool names.")
    @click.option("--reason", "-m")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def add(ctx: click.Context, file: Path | None, name: str | None, description: str | None,
            body: str | None, category: str | None, tools: str | None, reason: str | None,
            as_json: bool) -> None:
        """Add a skill from a SKILL.md FILE, or from --name/--description/--body."""
        tenant = ctx.obj["skills_tenant"]

        async def run(lib: SkillLibrary) -> Revision:
            if file is not None:
                return await lib.add_file(tenant, file, author=_author(), reason=reason)
            if not name or not description:
                raise click.UsageError("give a SKILL.md file, or --name and --description")
            skill = Skill(name=name, description=description, body=body or "", category=category,
                          tools=tuple(t.strip() for t in (tools or "").split(",") if t.strip()))
            parse_skill(render_skill_file(skill), name, max_body_bytes=lib.settings.max_body_bytes)
            return await lib.add(tenant, skill, author=_author(), reason=reason)

        _print_rev(_run(ctx, run), as_json, "added")

    @skills.command()
    @click.argument("name")
    @click.option("--reason", "-m")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def edit(ctx: click.Context, name: str, reason: str | None, as_json: bool) -> None:
        """Open the skill in $EDITOR; the saved text becomes a revision if it is valid."""
        tenant = ctx.obj["skills_tenant"]

        async def current(lib: SkillLibrary) -> str:
            cur = await lib.get(tenant, name)
            return (await lib.revision(tenant, cur.revision)).content or ""

        before = _run(ctx, current)
        after = click.edit(before, extension=".md", require_save=True)
        if after is None or after == before:
            click.echo("no change")
            return

        async def save(lib: SkillLibrary) -> Revision | None:
            return await lib.update_text(tenant, name, after, author=_author(), reason=reason,
                                         where=f"{name}/SKILL.md (edited)")

        try:
            rev = _run(ctx, save)
        except click.ClickException:
            keep = Path(tempfile.mkdtemp(prefix="molt-skill-")) / "SKILL.md"
            keep.write_text(after, encoding="utf-8")
            click.echo(f"your edit is kept in {keep}", err=True)
            raise
        _print_rev(rev, as_json, "edited")

    @skills.command()
    @click.argument("name")
    @click.option("--purge", is_flag=True, help="Delete the folder instead of retiring.")
    @click.option("--reason", "-m")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def rm(ctx: click.Context, name: str, purge: bool, reason: str | None, as_json: bool) -> None:
        """Retire a skill (never served again; history kept), or --purge its folder."""
        tenant = ctx.obj["skills_tenant"]

        async def run(lib: SkillLibrary) -> Revision | None:
            if purge:
                return await lib.delete(tenant, name, author=_author(), reason=reason)
            return await lib.retire(tenant, name, author=_author(), reason=reason)

        _print_rev(_run(ctx, run), as_json, "deleted" if purge else "retired")

    @skills.command()
    @click.argument("name", required=False)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def history(ctx: click.Context, name: str | None, as_json: bool) -> None:
        """Every revision of a skill (or of the whole library), oldest first."""
        tenant = ctx.obj["skills_tenant"]
        revs = _run(ctx, lambda lib: lib.history(tenant, name))
        if as_json:
            echo_json([r.as_dict() for r in revs])
            return
        for r in revs:
            click.echo(_rev_line(r))

    @skills.command()
    @click.argument("name")
    @click.argument("rev", required=False)
    @click.option("--against", help="Compare REV with this revision instead of its parent.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def diff(ctx: click.Context, name: str, rev: str | None, against: str | None, as_json: bool) -> None:
        """The diff a revision made (default: the newest), or between two revisions."""
        tenant = ctx.obj["skills_tenant"]

        async def run(lib: SkillLibrary) -> tuple[str, str]:
            revs = await lib.history(tenant, name)
            target = await lib.revision(tenant, rev) if rev else revs[-1]
            if target.name != name:
                raise click.UsageError(f"revision {rev} is not a revision of {name}")
            if against:
                other = await lib.revision(tenant, against)
                return target.id, unified_diff(other.content, target.content, name)
            return target.id, target.diff

        rid, text = _run(ctx, run)
        if as_json:
            echo_json({"revision": rid, "diff": text})
        else:
            click.echo(text, nl=False)

    @skills.command()
    @click.argument("name")
    @click.argument("rev")
    @click.option("--reason", "-m")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def revert(ctx: click.Context, name: str, rev: str, reason: str | None, as_json: bool) -> None:
        """Make a skill what it was at revision REV."""
        tenant = ctx.obj["skills_tenant"]
        r = _run(ctx, lambda lib: lib.revert(tenant, name, rev, author=_author(), reason=reason))
        _print_rev(r, as_json, "reverted")

    @skills.command("import")
    @click.argument("path", type=click.Path(exists=True, path_type=Path))
    @click.option("--replace", is_flag=True, help="Overwrite skills that already exist.")
    @click.option("--reason", "-m")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def import_(ctx: click.Context, path: Path, replace: bool, reason: str | None, as_json: bool) -> None:
        """Import a SKILL.md, a skill folder, a MetaClaw tree of <name>/SKILL.md, or a JSON skill bank."""
        tenant = ctx.obj["skills_tenant"]
        results = _run(ctx, lambda lib: lib.import_report(tenant, path, author=_author(),
                                                          reason=reason, replace=replace))
        if as_json:
            echo_json([r.as_dict() for r in results])
            return
        done = [r for r in results if r.action != "skipped"]
        click.echo(f"imported {len(done)} skills, skipped {len(results) - len(done)}")
        for r in results:
            click.echo(f"  {r.name}: {r.action}" + (f" -> {r.revision.id}" if r.revision else "")
                       + (f" ({r.reason})" if r.action == "skipped" and r.reason else ""))

    @skills.command()
    @click.argument("dest", type=click.Path(path_type=Path))
    @click.option("--include-retired", is_flag=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def export(ctx: click.Context, dest: Path, include_retired: bool, as_json: bool) -> None:
        """Write the library to DEST as <name>/SKILL.md folders."""
        tenant = ctx.obj["skills_tenant"]
        paths = _run(ctx, lambda lib: lib.export(tenant, dest, include_retired=include_retired))
        if as_json:
            echo_json([str(p) for p in paths])
        else:
            click.echo(f"exported {len(paths)} skills to {dest}")

    @skills.command()
    @click.argument("name")
    @click.option("--reason", "-m")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def approve(ctx: click.Context, name: str, reason: str | None, as_json: bool) -> None:
        """Let a quarantined skill be served."""
        tenant = ctx.obj["skills_tenant"]
        r = _run(ctx, lambda lib: lib.approve(tenant, name, author=_author(), reason=reason))
        _print_rev(r, as_json, "approved")

    @skills.command("settings")
    @click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE",
                  help="enabled, top_k, min_similarity, token_budget, quarantine_evolver_edits")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def settings_(ctx: click.Context, pairs: tuple[str, ...], as_json: bool) -> None:
        """Show or change this tenant's skill settings."""
        tenant = ctx.obj["skills_tenant"]
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep:
                raise click.UsageError(f"--set {pair!r}: expected KEY=VALUE")
            try:
                values[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                values[key.strip()] = raw

        async def run(lib: SkillLibrary) -> dict[str, Any]:
            if not values:
                return (await lib.tenant_settings(tenant)).as_dict()
            ten = await lib.tenant(tenant)
            out = await write_tenant_settings(lib.db, ten.id, values, lib.settings)
            return out.as_dict()

        data = _run(ctx, run)
        if as_json:
            echo_json(data)
        else:
            for k, v in data.items():
                click.echo(f"{k} = {json.dumps(v)}")
