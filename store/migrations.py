"""The schema, as append-only migrations.

Each `mNNN_*` function runs once, in order, and is recorded in
`schema_migrations`. Never edit a migration that has shipped: append a new one.

Several processes may open one PostgreSQL store at the same instant (replicas
started together): every migration transaction first takes one advisory lock,
so one process applies a migration while the others wait, then find it recorded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Migration = Callable[[AsyncConnection], Awaitable[None]]


async def _create(conn: AsyncConnection, *tables: sa.Table) -> None:
    def run(sync_conn: sa.Connection) -> None:
        for table in tables:
            table.create(sync_conn)

    await conn.run_sync(run)


async def m001_initial(conn: AsyncConnection) -> None:
    md = sa.MetaData()
    tenants = sa.Table(
        "tenants",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("settings", sa.JSON, nullable=True),
    )
    api_keys = sa.Table(
        "api_keys",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    sessions = sa.Table(
        "sessions",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("external_id", sa.String(256), nullable=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_turn_at", sa.Float, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("turn_count", sa.Integer, nullable=False),
        sa.UniqueConstraint("tenant_id", "external_id", name="uq_sessions_tenant_external"),
    )
    turns = sa.Table(
        "turns",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False, index=True),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("turn_type", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("request_model", sa.String(256), nullable=False),
        sa.Column("response_model", sa.String(256), nullable=True),
        sa.Column("upstream", sa.String(512), nullable=True),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("upstream_request", sa.JSON, nullable=True),
        sa.Column("response", sa.JSON, nullable=True),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("tool_calls", sa.JSON, nullable=True),
        sa.Column("think", sa.JSON, nullable=True),
        sa.Column("finish_reason", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("ttft_ms", sa.Float, nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("weight_version", sa.String(64), nullable=True),
        sa.Column("skill_generation", sa.Integer, nullable=True),
        sa.Column("injected_skills", sa.JSON, nullable=True),
        sa.Column("context_version", sa.String(64), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True, index=True),
    )
    feedback = sa.Table(
        "feedback",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True, index=True),
        sa.Column("turn_id", sa.String(64), nullable=True, index=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("meta", sa.JSON, nullable=True),
    )
    await _create(conn, tenants, api_keys, sessions, turns, feedback)


async def m002_skills(conn: AsyncConnection) -> None:
    md = sa.MetaData()
    skill_state = sa.Table(
        "skill_state",
        md,
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("seeded_at", sa.Float, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    skill_revisions = sa.Table(
        "skill_revisions",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("diff", sa.Text, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("provenance", sa.JSON, nullable=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Index("ix_skill_revisions_tenant_name", "tenant_id", "name"),
    )
    await _create(conn, skill_state, skill_revisions)


async def m003_evolver(conn: AsyncConnection) -> None:
    md = sa.MetaData()
    evolver_locks = sa.Table(
        "evolver_locks",
        md,
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    evolutions = sa.Table(
        "evolutions",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.JSON, nullable=True),
    )
    proposals = sa.Table(
        "skill_proposals",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("evolution_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ops", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("provenance", sa.JSON, nullable=True),
        sa.Column("scores", sa.JSON, nullable=True),
        sa.Column("revisions", sa.JSON, nullable=True),
    )
    context_versions = sa.Table(
        "context_versions",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("parent", sa.String(64), nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scores", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "version", name="uq_context_versions_tenant_version"),
    )
    await _create(conn, evolver_locks, evolutions, proposals, context_versions)


async def m004_sessions_reopen(conn: AsyncConnection) -> None:
    """After `X-Session-Done` the same `X-Session-Id` names a new session, so an
    external id is no longer unique per tenant: a plain index replaces the constraint."""
    if conn.dialect.name == "sqlite":
        # SQLite cannot drop a constraint: rebuild the table without it.
        for stmt in (
            (
                "CREATE TABLE sessions_new (id VARCHAR(64) NOT NULL PRIMARY KEY, "
                "tenant_id VARCHAR(64) NOT NULL, external_id VARCHAR(256), "
                "started_at FLOAT NOT NULL, last_turn_at FLOAT NOT NULL, done BOOLEAN NOT NULL, "
                "turn_count INTEGER NOT NULL)"
            ),
            (
                "INSERT INTO sessions_new (id, tenant_id, external_id, started_at, last_turn_at, "
                "done, turn_count) SELECT id, tenant_id, external_id, started_at, last_turn_at, "
                "done, turn_count FROM sessions"
            ),
            "DROP TABLE sessions",
            "ALTER TABLE sessions_new RENAME TO sessions",
            "CREATE INDEX ix_sessions_tenant_id ON sessions (tenant_id)",
        ):
            await conn.execute(sa.text(stmt))
    else:
        await conn.execute(sa.text("ALTER TABLE sessions DROP CONSTRAINT uq_sessions_tenant_external"))
    await conn.execute(
        sa.text("CREATE INDEX ix_sessions_tenant_external ON sessions (tenant_id, external_id)")
    )


async def m005_dead_letters(conn: AsyncConnection) -> None:
    md = sa.MetaData()
    dead_letters = sa.Table(
        "dead_letters",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("turn_id", sa.String(64), nullable=False, index=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("failed_at", sa.Float, nullable=False),
        sa.Column("error", sa.String(128), nullable=False),
        sa.Column("record", sa.Text, nullable=True),
    )
    await _create(conn, dead_letters)


async def m006_open_session_unique(conn: AsyncConnection) -> None:
    """At most one *open* session per tenant and external id (a done one frees the id).

    Two processes that receive the same `X-Session-Id` at once then agree on one
    session: the recorder's insert skips on this index and its turns join the stored one.
    """
    await conn.execute(sa.text(
        "CREATE UNIQUE INDEX uq_sessions_open_external ON sessions (tenant_id, external_id) "
        "WHERE done = false AND external_id IS NOT NULL"
    ))
async def m007_training(conn: AsyncConnection) -> None:
    """The slow loop: training jobs and their history, and one lease per tenant."""
    md = sa.MetaData()
    open_job = sa.text("status IN ('queued', 'running', 'paused')")
    jobs = sa.Table(
        "training_jobs",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("data_until", sa.Float, nullable=False),
        sa.Column("budget_minutes", sa.Float, nullable=True),
        sa.Column("budget_steps", sa.Integer, nullable=True),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("work_dir", sa.Text, nullable=True),
        sa.Column("checkpoint", sa.Text, nullable=True),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("stop_reason", sa.String(32), nullable=True),
        sa.Column("last_window", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("version", sa.String(16), nullable=True),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("gate", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        # at most one unfinished job per tenant
        sa.Index("uq_training_jobs_open", "tenant_id", unique=True,
                 sqlite_where=open_job, postgresql_where=open_job),
    )
    leases = sa.Table(
        "training_leases",
        md,
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    events = sa.Table(
        "training_events",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False, index=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON, nullable=True),
    )
    await _create(conn, jobs, leases, events)


async def m008_key_limits(conn: AsyncConnection) -> None:
    """Per-key rate limits: requests and tokens per minute, requests in flight."""
    for column in ("rpm", "tpm", "concurrency"):
        await conn.execute(sa.text(f"ALTER TABLE api_keys ADD COLUMN {column} INTEGER"))


async def m009_turn_followup_from(conn: AsyncConnection) -> None:
    """OpenAI Responses follow-ups: where a `previous_response_id` continues a turn's messages.

    NULL for a turn no follow-up may continue (a chat turn, or a Response made
    with `store: false`); else the index of the first request message carried
    into the follow-up (past the instructions, which OpenAI does not carry).
    """
    await conn.execute(sa.text("ALTER TABLE turns ADD COLUMN followup_from INTEGER"))


async def m010_tool_overlays(conn: AsyncConnection) -> None:
    """Per-tenant, versioned rewrites of tool parameter descriptions (the evolver's overlays)."""
    md = sa.MetaData()
    overlays = sa.Table(
        "tool_overlays",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("tool", sa.String(128), nullable=False),
        sa.Column("param", sa.String(256), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("base", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("proposal_id", sa.String(64), nullable=True, index=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("changed_at", sa.Float, nullable=True),
        sa.UniqueConstraint("tenant_id", "tool", "param", "version", name="uq_tool_overlays_version"),
    )
    await _create(conn, overlays)


async def m011_turn_tool_overlays(conn: AsyncConnection) -> None:
    """Which tool overlay versions served a turn: a JSON list of {id, version, tool, param}.

    NULL on turns recorded before (and on turns no overlay hook saw); [] when
    none applied to the request's tools.
    """
    await conn.execute(sa.text("ALTER TABLE turns ADD COLUMN tool_overlays JSON"))


async def m012_turn_recorded_at(conn: AsyncConnection) -> None:
    """When each turn row was written (the database's clock), apart from when it was served.

    What the evolver's watch reads "since its last look" by: a turn that arrives late (from
    the spool, or another process) has an old `created_at` but a new `recorded_at`. Rows
    written before are stamped with their `created_at`. Feedback is stamped as it is stored
    (its `created_at`); it gets the index the same "since" read needs.
    """
    await conn.execute(sa.text("ALTER TABLE turns ADD COLUMN recorded_at FLOAT"))
    await conn.execute(sa.text("UPDATE turns SET recorded_at = created_at"))
    await conn.execute(sa.text(
        "CREATE INDEX ix_turns_tenant_recorded ON turns (tenant_id, recorded_at, id)"))
    await conn.execute(sa.text(
        "CREATE INDEX ix_feedback_tenant_created ON feedback (tenant_id, created_at, id)"))


# Append new migrations below and register them in MIGRATIONS, in order.
MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_initial", m001_initial),
    ("m002_skills", m002_skills),
    ("m003_evolver", m003_evolver),
    ("m004_sessions_reopen", m004_sessions_reopen),
    ("m005_dead_letters", m005_dead_letters),
    ("m006_open_session_unique", m006_open_session_unique),
    ("m007_training", m007_training),
    ("m008_key_limits", m008_key_limits),
    ("m009_turn_followup_from", m009_turn_followup_from),
    ("m010_tool_overlays", m010_tool_overlays),
    ("m011_turn_tool_overlays", m011_turn_tool_overlays),
    ("m012_turn_recorded_at", m012_turn_recorded_at),
]


# pg_advisory_xact_lock key of molt's migrations ("molt" in ASCII)
_PG_MIGRATION_LOCK = 0x6D6F6C74


async def _serialised(conn: AsyncConnection) -> None:
    """Hold the migration lock until this transaction ends (PostgreSQL; SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})


async def migrate(engine: AsyncEngine) -> list[str]:
    """Bring the database to the head; return the names applied now."""
    applied_now: list[str] = []
    async with engine.begin() as conn:
        await _serialised(conn)

        def ensure(sync_conn: sa.Connection) -> None:
            md = sa.MetaData()
            sa.Table(
                "schema_migrations",
                md,
                sa.Column("name", sa.String(128), primary_key=True),
                sa.Column("applied_at", sa.Float, nullable=False),
            ).create(sync_conn, checkfirst=True)

        await conn.run_sync(ensure)
    for name, fn in MIGRATIONS:
        async with engine.begin() as conn:
            await _serialised(conn)
            row = await conn.execute(
                sa.text("SELECT name FROM schema_migrations WHERE name = :n"), {"n": name}
            )
            if row.first() is not None:
                continue
            await fn(conn)
            await conn.execute(
                sa.text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                {"n": name, "t": time.time()},
            )
            applied_now.append(name)
    return applied_now
