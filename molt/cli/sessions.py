"""`molt sessions list|show ID`: read recorded trajectories."""

from __future__ import annotations

import json
from typing import Any

import click

from molt.cli.common import echo_json, settings_from, tenant_id_of, ts, with_db
from store.database import Database
from store.records import SessionDetail
from store.trajectories import TrajectoryStore


def _turn_json(turn: dict[str, Any], feedback: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(turn)
    out["feedback"] = [f for f in feedback if f.get("turn_id") == turn["id"]]
    return out


def detail_json(d: SessionDetail) -> dict[str, Any]:
    s = d.summary
    return {
        "id": s.id, "tenant": s.tenant, "external_id": s.external_id, "turns": s.turns,
        "started_at": s.started_at, "last_turn_at": s.last_turn_at, "done": s.done,
        "turn_list": [_turn_json(t, d.feedback) for t in d.turns],
        "feedback": [f for f in d.feedback if not f.get("turn_id")],
    }


def _short(text: Any, width: int = 2000) -> str:
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    return s if len(s) <= width else s[:width] + " …"


def render_transcript(d: SessionDetail) -> str:
    s = d.summary
    lines = [f"session {s.id}  tenant={s.tenant}  turns={s.turns}  started {ts(s.started_at)}"
             + ("  [done]" if s.done else "")]
    shown = 0
    for t in d.turns:
        lines.append("")
        lines.append(
            f"── turn {t['idx']} ({t['turn_type']})  {t['id']}  model={t['request_model']}  "
            f"status={t['status']}  {t['latency_ms'] or 0:.0f} ms"
            + (f"  version={t['weight_version']}" if t.get("weight_version") else "")
            + (f"  skills gen {t['skill_generation']}" if t.get("skill_generation") is not None else "")
        )
        overlays = [f"{o.get('tool')}.{o.get('param')} v{o.get('version')} ({o.get('id')})"
                    for o in t.get("tool_overlays") or [] if isinstance(o, dict)]
        if overlays:
            lines.append(f"  {'overlays':>9}: {', '.join(overlays)}")
        messages = (t.get("request") or {}).get("messages") or []
        for m in messages[shown if t["idx"] else 0:]:
            role = m.get("role", "?")
            if m.get("content"):
                lines.append(f"  {role:>9}: {_short(m['content'])}")
            for c in m.get("tool_calls") or []:
                fn = c.get("function") or {}
                lines.append(f"  {role:>9}: → {fn.get('name')}({_short(fn.get('arguments'), 400)})")
        shown = len(messages) + 1
        if t.get("content"):
            lines.append(f"  {'assistant':>9}: {_short(t['content'])}")
        for c in t.get("tool_calls") or []:
            fn = c.get("function") or {}
            lines.append(f"  {'assistant':>9}: → {fn.get('name')}({_short(fn.get('arguments'), 400)})")
        if t.get("error"):
            lines.append(f"  {'error':>9}: {_short((t['error'] or {}).get('message'), 400)}")
        for f in d.feedback:
            if f.get("turn_id") == t["id"]:
                lines.append(f"  {'feedback':>9}: [{f['source']}] score={f['score']} {f['text'] or ''}")
    for f in d.feedback:
        if not f.get("turn_id"):
            lines.append(f"\nsession feedback [{f['source']}] score={f['score']} {f['text'] or ''}")
    return "\n".join(lines)


def register(cli: click.Group) -> None:
    @cli.group()
    def sessions() -> None:
        """Recorded sessions (trajectories)."""

    @sessions.command("list")
    @click.option("--limit", default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx: click.Context, limit: int, as_json: bool) -> None:
        """The most recent sessions."""
        rows = with_db(settings_from(ctx), lambda db: TrajectoryStore(db).list_sessions(limit=limit))
        if as_json:
            echo_json([
                {"id": s.id, "tenant": s.tenant, "external_id": s.external_id, "turns": s.turns,
                 "started_at": s.started_at, "last_turn_at": s.last_turn_at, "done": s.done}
                for s in rows
            ])
            return
        for s in rows:
            click.echo(f"{s.id}  {ts(s.started_at)}  tenant={s.tenant}  turns={s.turns}"
                       + (f"  ext={s.external_id}" if s.external_id else "") + ("  done" if s.done else ""))

    @sessions.command("show")
    @click.argument("session_id")
    @click.option("--tenant", default=None,
                  help="The tenant whose session (or client session id) this is.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def show(ctx: click.Context, session_id: str, tenant: str | None, as_json: bool) -> None:
        """One session as a transcript (tool calls and feedback included)."""

        async def run(db: Database) -> SessionDetail:
            tenant_id = await tenant_id_of(db, tenant)
            return await TrajectoryStore(db).get_session(session_id, tenant_id=tenant_id)

        d = with_db(settings_from(ctx), run)
        if as_json:
            out = detail_json(d)
            out["turns"] = out.pop("turn_list")
            out["turn_count"] = d.summary.turns
            echo_json(out)
        else:
            click.echo(render_transcript(d))
