"""The current shape of every table, for queries.

The schema itself is created and changed only by `store.migrations`; a test
checks that a blank database migrated to the head matches these definitions.
Column names follow the OpenTelemetry GenAI conventions where one exists
(`request_model` ~ gen_ai.request.model, `input_tokens`/`output_tokens` ~
gen_ai.usage.*, `session_id` ~ gen_ai.conversation.id).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("settings", sa.JSON, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(128), nullable=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    # Rate limits of this key (m008); NULL: the server's `[limits]` default, 0: none.
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("concurrency", sa.Integer, nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("external_id", sa.String(256), nullable=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_turn_at", sa.Float, nullable=False),
    sa.Column("done", sa.Boolean, nullable=False, default=False),
    sa.Column("turn_count", sa.Integer, nullable=False, default=0),
    # Not unique: after `X-Session-Done` the same external id names a new session;
    # unique among open sessions (m006_open_session_unique).
    sa.Index("ix_sessions_tenant_external", "tenant_id", "external_id"),
    sa.Index("uq_sessions_open_external", "tenant_id", "external_id", unique=True,
             sqlite_where=sa.text("done = false AND external_id IS NOT NULL"),
             postgresql_where=sa.text("done = false AND external_id IS NOT NULL")),
)

turns = sa.Table(
    "turns",
    metadata,
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
    # A Responses turn a `previous_response_id` may continue: its messages from here on
    # (m009_turn_followup_from; see store/followups.py).
    sa.Column("followup_from", sa.Integer, nullable=True),
    # The tool overlays that served the turn (m011_turn_tool_overlays): [{id, version, tool, param}].
    sa.Column("tool_overlays", sa.JSON, nullable=True),
    # When the row was written, by the database's clock (m012_turn_recorded_at): what "turns
    # since the last look" means, so that a turn that arrives late is still seen.
    sa.Column("recorded_at", sa.Float, nullable=True),
    sa.Index("ix_turns_tenant_recorded", "tenant_id", "recorded_at", "id"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=True, index=True),
    sa.Column("turn_id", sa.String(64), nullable=True, index=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("meta", sa.JSON, nullable=True),
    sa.Index("ix_feedback_tenant_created", "tenant_id", "created_at", "id"),  # m012
)

skill_state = sa.Table(
    "skill_state",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("seeded_at", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

skill_revisions = sa.Table(
    "skill_revisions",
    metadata,
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

evolver_locks = sa.Table(
    "evolver_locks",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
evolutions = sa.Table(
    "evolutions",
    metadata,
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
    metadata,
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
    metadata,
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
# Per-tenant rewrites of tool parameter descriptions (store/tool_overlays.py): laid over
# the agent's tool schema by the proxy. `param` is a dotted path through `properties`;
# `base` is the agent's own description the rewrite replaces (NULL: it had none).
tool_overlays = sa.Table(
    "tool_overlays",
    metadata,
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
# Turns the recorder could not store whole (see proxy/recorder.py): the record as
# JSON text (ASCII-escaped, so any store accepts it) and why it failed.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("turn_id", sa.String(64), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("failed_at", sa.Float, nullable=False),
    sa.Column("error", sa.String(128), nullable=False),
    sa.Column("record", sa.Text, nullable=True),
)

_OPEN_JOB = sa.text("status IN ('queued', 'running', 'paused')")
training_jobs = sa.Table(
    "training_jobs",
    metadata,
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
             sqlite_where=_OPEN_JOB, postgresql_where=_OPEN_JOB),
)
training_leases = sa.Table(
    "training_leases",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
training_events = sa.Table(
    "training_events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("detail", sa.JSON, nullable=True),
)
