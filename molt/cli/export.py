"""`molt export OUT`: recorded turns as fine-tuning JSONL or Parquet, and as OTLP spans.

    molt export train.jsonl --tenant acme --since 2026-11-01 --outcome ok --outcome good
    molt export turns.parquet --version v0003
    molt export --otlp http://collector:4318 --since 2026-12-01T00:00Z

JSONL lines are OpenAI chat fine-tuning examples (`store/chat_examples.py`), one
per turn by default or one per session (`--per session`: its last turn, which
carries the whole conversation); Parquet has one row per turn, errors included
(`store/export_files.py`). What is selected is `store/export.py`'s `Selection`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from molt.cli.common import echo_json, settings_from, tenant_id_of, with_db
from store.chat_examples import Form
from store.database import Database
from store.export import Per, Selection, Status, Verdict, iter_turns
from store.export_files import JsonlWriter, ParquetWriter, TurnWriter

STATUSES: tuple[Status, ...] = ("ok", "error")
VERDICTS: tuple[Verdict, ...] = ("good", "bad", "unscored")
PARQUET_SUFFIXES = (".parquet", ".pq")


def parse_time(value: str, name: str) -> float:
    """An ISO 8601 date or time (`2026-12-01`, `2026-12-01T08:00`, `...Z`, `...+02:00`) as
    seconds since the epoch; a time without a zone is UTC."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time "
                                 "(e.g. 2026-12-01 or 2026-12-01T08:00:00Z)", param_hint=name) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _outcomes(values: tuple[str, ...]) -> tuple[Status | None, Verdict | None]:
    status = [v for v in values if v in STATUSES]
    verdict = [v for v in values if v in VERDICTS]
    if len(set(status)) > 1 or len(set(verdict)) > 1:
        raise click.UsageError("--outcome takes at most one of ok/error and one of "
                               "good/bad/unscored (they are combined with AND)")
    return (status[0] if status else None), (verdict[0] if verdict else None)  # type: ignore[return-value]


@dataclass(slots=True)
class Counts:
    selected: int = 0
    written: int = 0
    skipped: int = 0  # JSONL: turns without a chat prompt or an answer
    spans: int = 0


def _file_writer(out: str, fmt: str, form: Form, meta: bool) -> TurnWriter:
    if fmt == "parquet":
        if out == "-":
            raise click.UsageError("Parquet cannot go to stdout: name a file")
        return ParquetWriter(Path(out), form=form)
    if out == "-":
        return JsonlWriter(stream=sys.stdout, form=form, meta=meta)
    return JsonlWriter(path=Path(out), form=form, meta=meta)


async def _export(db: Database, sel: Selection, writer: TurnWriter | None, spans: Any) -> Counts:
    counts = Counts()
    try:
        async for turn in iter_turns(db, sel):
            counts.selected += 1
            if writer is not None:
                if writer.write(turn):
                    counts.written += 1
                else:
                    counts.skipped += 1
            if spans is not None:
                spans.write(turn)
                counts.spans += 1
                if counts.spans % spans.batch_size == 0:
                    _flush_spans(spans)
        if spans is not None:
            _flush_spans(spans)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    return counts


def _flush_spans(spans: Any) -> None:
    """Wait for the spans written so far (the SDK's queue stays bounded); stop at a failure."""
    done = spans.flush()
    if spans.failed or not done:
        raise click.ClickException(
            f"the OTLP collector did not take {spans.failed or 'some'} spans "
            "(is it running, and does it speak OTLP/HTTP protobuf?)")


@click.command("export")
@click.argument("out", required=False)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default=None,
              help="Default: from OUT's suffix (.parquet, .pq), else jsonl.")
@click.option("--tenant", default=None, help="Only this tenant's turns (its name).")
@click.option("--since", default=None, help="Turns recorded at or after this ISO time (UTC if no zone).")
@click.option("--until", default=None, help="Turns recorded before this ISO time.")
@click.option("--outcome", "outcomes", multiple=True, type=click.Choice([*STATUSES, *VERDICTS]),
              help="ok / error (the turn's status); good / bad / unscored (its feedback score, "
                   "else its session's). Repeat to combine with AND: --outcome ok --outcome good.")
@click.option("--version", "version", default=None,
              help="Only turns served by this weight version (`base`: the base weights).")
@click.option("--per", type=click.Choice(["turn", "session"]), default="turn", show_default=True,
              help="One example per turn, or per session (its last main turn).")
@click.option("--upstream", is_flag=True,
              help="The prompt as molt sent it upstream (skills and context injected) instead "
                   "of as the agent sent it.")
@click.option("--meta", is_flag=True, help="JSONL: add a `metadata` object (ids, version, score).")
@click.option("--include-replays", is_flag=True, help="Also the evolver's replay turns.")
@click.option("--otlp", default=None, metavar="URL",
              help="Also send each turn as an OTLP span to this OTLP/HTTP collector.")
@click.option("--otlp-content", is_flag=True,
              help="With --otlp: put prompts and answers on the spans (off by default: user data).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def export(ctx: click.Context, out: str | None, fmt: str | None, tenant: str | None,
           since: str | None, until: str | None, outcomes: tuple[str, ...], version: str | None,
           per: Per, upstream: bool, meta: bool, include_replays: bool, otlp: str | None,
           otlp_content: bool, as_json: bool) -> None:
    """Write recorded turns as chat fine-tuning JSONL or Parquet (OUT, `-` for stdout)."""
    if out is None and otlp is None:
        raise click.UsageError("name OUT (a .jsonl or .parquet file, - for stdout) or --otlp URL")
    status, verdict = _outcomes(outcomes)
    t0 = None if since is None else parse_time(since, "--since")
    t1 = None if until is None else parse_time(until, "--until")
    form: Form = "upstream" if upstream else "agent"
    if fmt is None and out is not None:
        fmt = "parquet" if Path(out).suffix.lower() in PARQUET_SUFFIXES else "jsonl"
    if meta and fmt == "parquet":
        raise click.UsageError("--meta is for JSONL (Parquet rows always carry it)")
    settings = settings_from(ctx)

    async def run(db: Database) -> Counts:
        sel = Selection(tenant_id=await tenant_id_of(db, tenant), since=t0, until=t1, status=status, feedback=verdict,
                        weight_version=version, per=per, include_replays=include_replays)
        writer = None if out is None else _file_writer(out, fmt or "jsonl", form, meta)
        spans = None
        if otlp is not None:
            from store.otel import SpanWriter

            spans = SpanWriter(otlp, service_name=settings.otel.service_name,
                               capture_content=otlp_content, timeout_s=settings.otel.timeout_s)
        try:
            return await _export(db, sel, writer, spans)
        finally:
            if spans is not None:
                spans.shutdown()

    counts = with_db(settings, run)
    summary = {"selected": counts.selected, "written": counts.written, "skipped": counts.skipped,
               "spans": counts.spans, "out": out, "format": fmt if out else None}
    if as_json and out != "-":
        echo_json(summary)
        return
    parts = []
    if out is not None:
        parts.append(f"wrote {counts.written} {'lines' if fmt == 'jsonl' else 'rows'} to {out}")
        if counts.skipped:
            parts.append(f"{counts.skipped} turns without a chat prompt or an answer skipped")
    if otlp is not None:
        parts.append(f"sent {counts.spans} spans to {otlp}")
    click.echo("; ".join(parts) or "nothing selected", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(export)
