"""The one settings tree of molt.

The types live here (the bottom layer) so that every package can receive them;
`molt.config` builds an instance from `molt.toml` and `MOLT_*` variables and
passes it down. Nothing reads settings at import time.
"""

from __future__ import annotations

import difflib
import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8787


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    admin_key: SecretStr | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    # How long an API key lookup is cached; a revoked key stops working within this.
    key_cache_ttl_s: float = 5.0

    def is_loopback(self) -> bool:
        host = self.host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class StoreSettings(BaseModel):
    url: str = "sqlite+aiosqlite:///./.molt/molt.db"
    echo: bool = False


class RecorderSettings(BaseModel):
    queue_size: int = 10_000
    batch_size: int = 256
    # After the first queued turn, wait this long for more so that slow traffic
    # still writes in batches (one transaction per turn costs ~1 ms of CPU).
    linger_s: float = 0.05
    # Drops are logged at most once per this many seconds.
    drop_log_interval_s: float = 10.0
    # `flush()` (feedback on a turn not yet written) waits at most this long.
    flush_timeout_s: float = Field(default=5.0, gt=0)
    # `stop()` writes what is queued for at most this long, then spills the rest to
    # `<dir>/<process>/spill-*.jsonl`, which the next start replays into the store.
    stop_timeout_s: float = Field(default=10.0, gt=0)
    # /healthz says "degraded" (503) when a queued turn has waited longer than this.
    stuck_after_s: float = Field(default=30.0, gt=0)
    # Append every finished turn to a local spool file before queueing it (removed
    # once written), so that even kill -9 loses no completed turn.
    spool: bool = False
    # A spool segment file is closed after this many turns (and removed once all are written).
    spool_segment_turns: int = Field(default=1000, ge=1)
    # Spool and spill files; default `<data_dir>/recorder`.
    dir: Path | None = None
    # Backoff between retries of a write the store could not take (database down).
    max_retry_delay_s: float = Field(default=5.0, gt=0)

    def files_dir(self, data_dir: Path) -> Path:
        return self.dir if self.dir is not None else data_dir / "recorder"


# litellm parameters that a [[models]] entry sets by its own keys (or, for the key itself,
# by the name of an environment variable, so that no secret is written in molt.toml).
_OWN_KEYS = {"model": "litellm", "api_base": "api_base", "base_url": "api_base",
             "api_key": "api_key_env", "timeout": "timeout_s", "num_retries": "num_retries",
             "fallbacks": "fallbacks"}


class ModelRoute(BaseModel):
    """One model alias a client can ask for, and where it is served.

    Exactly one of `base_url` (any OpenAI-compatible server: the byte-stream
    fast path), `litellm` (any litellm model string) or `local` (a local
    model folder served by molt itself) is set. Unknown keys are refused, so
    that a misspelt one is not silently ignored.
    """

    model_config = ConfigDict(extra="forbid")

    alias: str
    base_url: str | None = None
    litellm: str | None = None
    local: str | None = None
    # Model name sent upstream; defaults to the alias (base_url) or the litellm string.
    upstream_model: str | None = None
    # The environment variable holding the upstream's API key (base_url and litellm routes).
    api_key_env: str | None = None
    # litellm only: the provider's URL (an OpenAI-compatible server, an Azure resource...).
    api_base: str | None = None
    # litellm only: more parameters for litellm's completion call (api_version, extra_headers...).
    litellm_params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    num_retries: int = Field(default=2, ge=0)
    # Other aliases tried in order when this route fails before answering (any kind).
    fallbacks: list[str] = Field(default_factory=list)
    # A vLLM server with runtime LoRA updating behind base_url.
    vllm: bool = False
    # `local` only: how LoRA versions are served. "merged": each version is its own
    # model copy with the adapter merged in (full speed, one base-sized copy per loaded
    # version); "shared": adapters attached to the one base model (little memory, a
    # short pause of generation while one is attached); "auto": merged up to 1B params.
    lora_mode: Literal["auto", "merged", "shared"] = "auto"
    # `base_url` only: what the server speaks. "anthropic": the Messages API
    # (`<base_url>/messages`), where POST /v1/messages is forwarded natively.
    protocol: Literal["openai", "anthropic"] = "openai"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = [k for k in data if k not in cls.model_fields]
        if unknown:
            raise ValueError(_unknown_keys_message(data.get("alias"), unknown,
                                                   list(cls.model_fields)))
        return data

    @model_validator(mode="after")
    def _one_target(self) -> ModelRoute:
        targets = [t for t in (self.base_url, self.litellm, self.local) if t]
        if len(targets) != 1:
            raise ValueError(
                f"model alias {self.alias!r} needs exactly one of base_url, litellm or local"
            )
        if self.kind != "litellm":
            given = [k for k in ("api_base", "litellm_params") if getattr(self, k)]
            if given:
                hint = " (use base_url)" if self.kind == "http" and "api_base" in given else ""
                verb = "apply" if len(given) > 1 else "applies"
                raise ValueError(f"model alias {self.alias!r}: {' and '.join(given)} "
                                 f"{verb} only to a litellm route{hint}")
        for key in self.litellm_params:
            if key in _OWN_KEYS:
                raise ValueError(
                    f"model alias {self.alias!r}: litellm_params.{key} is set by the entry's own "
                    f"key {_OWN_KEYS[key]!r}, not in litellm_params")
        if self.alias in self.fallbacks:
            raise ValueError(f"model alias {self.alias!r} lists itself as a fallback")
        if self.protocol != "openai" and (not self.base_url or self.vllm):
            raise ValueError(
                f"model alias {self.alias!r}: protocol = {self.protocol!r} needs base_url "
                "(a server that speaks that API), not litellm, local or vllm"
            )
        return self

    @property
    def kind(self) -> Literal["http", "litellm", "local"]:
        if self.base_url:
            return "http"
        if self.litellm:
            return "litellm"
        return "local"


def _unknown_keys_message(alias: Any, unknown: list[str], known: list[str]) -> str:
    """Which keys of a [[models]] entry are not ours, the closest known ones, and the rest."""
    parts = []
    for key in unknown:
        near = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    who = f"model alias {alias!r}" if isinstance(alias, str) else "a [[models]] entry"
    return (f"{who}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(parts)}; "
            f"a [[models]] entry takes {', '.join(known)} (more litellm parameters go in "
            "litellm_params = { ... })")


class LimitsSettings(BaseModel):
    """The default rate limits of every API key (a key's own limits replace them).

    None: no limit. Requests and tokens are counted over the last 60 seconds;
    `concurrency` is the most requests of one key in flight at once.
    """

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)


class SkillsSettings(BaseModel):
    """The skill library, its index and injection (per-tenant overrides live in tenants.settings)."""

    enabled: bool = True
    # Library root: `<dir>/<tenant>/<name>/SKILL.md`; default `<data_dir>/skills`.
    dir: Path | None = None
    # Seed skills imported into each tenant's library on first use; None ships none.
    seed_dir: Path | None = Path(__file__).resolve().parent.parent / "skills"
    # Embedded Chroma under this path (default `<data_dir>/chroma`), or a Chroma server by URL.
    chroma_path: Path | None = None
    chroma_url: str | None = None
    top_k: int = Field(default=3, ge=0, le=50)
    # Cosine similarity under which a skill is never injected.
    min_similarity: float = Field(default=0.2, ge=-1.0, le=1.0)
    # Most tokens (estimated at 4 characters each) the injected block may take.
    token_budget: int = Field(default=1200, ge=0)
    max_body_bytes: int = Field(default=8192, ge=256)
    # Skills written by the evolver land as `quarantined` until approved (per tenant too:
    # `PUT /admin/skills/settings {"quarantine_evolver_edits": true}`).
    quarantine_evolver_edits: bool = False
    # `POST /admin/skills/export` with a `path` writes only under this folder; None: such an
    # export is refused and the archive comes back in the response instead.
    export_dir: Path | None = None
    # How often a proxy rescans the library files and the generation counter.
    poll_interval_s: float = Field(default=1.0, gt=0)
    # The embedding model's runtime: "numpy" (no torch, ~100 MB) or "torch"
    # (sentence-transformers, ~600 MB); the same vectors either way.
    embedder: Literal["numpy", "torch"] = "numpy"
    # The embedding model's threads: BLAS threads for "numpy" (None: 1, see
    # store/skills/minilm_numpy.py), torch intra-op threads for "torch" (None: torch's default).
    embed_threads: int | None = None
    # Open the index and load the embedding model at start rather than on the first
    # request that retrieves skills (which then pays for them).
    preload: bool = False

    def library_dir(self, data_dir: Path) -> Path:
        return self.dir if self.dir is not None else data_dir / "skills"

    def index_path(self, data_dir: Path) -> Path:
        return self.chroma_path if self.chroma_path is not None else data_dir / "chroma"


class EvolverModelSettings(BaseModel):
    """An OpenAI-compatible model for the judge or the evolver (molt's own URL works too)."""

    base_url: str
    model: str
    api_key_env: str | None = None


class EvolverSettings(BaseModel):
    # Run the evolver loop in `molt serve` (evolutions on demand work either way).
    enabled: bool = True
    # None: the offline rule-based miner writes skills from tool errors and complaints.
    model: EvolverModelSettings | None = None
    # None: no judge; failures come from tool errors and explicit feedback only.
    judge: EvolverModelSettings | None = None
    judge_votes: int = Field(default=3, ge=1, le=15)
    judge_temperature: float = 0.6
    # An evolution runs after this many new failure cases, or every interval_s if any.
    trigger_failures: int = Field(default=4, ge=1)
    interval_s: float = Field(default=300.0, gt=0)
    poll_s: float = Field(default=5.0, gt=0)
    lookback_s: float = Field(default=86_400.0, gt=0)
    min_support: int = Field(default=2, ge=1)
    # A complaint the reader understood as a wish (``pass currency="EUR"``) is the user saying
    # what they want: one is enough to propose the rule (the gate still replays it).
    wish_min_support: int = Field(default=1, ge=1)
    max_proposals: int = Field(default=3, ge=1)
    gate_minibatch: int = Field(default=3, ge=1)
    gate_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    gate_keep_sample: int = Field(default=8, ge=0)
    # Where replays go (default: this proxy) and the admin key for them (default: server.admin_key).
    replay_url: str | None = None
    replay_api_key_env: str | None = None
    # Also evolve the tenant's context block (fast weights) in each evolution.
    optimize_context: bool = True
    context_children: int = Field(default=2, ge=1, le=8)
    # Also rewrite the descriptions of tool parameters that keep getting refused, served as
    # per-tenant overlays on the agent's tool schemas once the gate accepts them.
    optimize_descriptions: bool = False


class CronWindowSettings(BaseModel):
    """A training window that opens at each fire time of a cron expression and lasts `minutes`."""

    cron: str  # five fields, crontab syntax: "0 1 * * *" is 01:00 every night
    minutes: float = Field(default=240.0, gt=0)
    timezone: str = "UTC"


class TrainerSettings(BaseModel):
    """The slow loop's scheduler (trainer/schedule.py): when windows open, and their budget.

    A window opens when any configured trigger holds: no agent traffic for `idle_minutes`,
    a cron window, or a calendar slot. Inside a window a job trains for at most
    `budget_minutes` and `budget_steps`; agent traffic pauses it (it resumes from its
    checkpoint in the next window), except in a window someone asked for (`molt train now`).
    """

    # Run the scheduler in `molt serve` (`molt train now` works either way).
    enabled: bool = False
    # Tenant names the scheduler trains; empty: every tenant in the store.
    tenants: list[str] = Field(default_factory=list)
    # Idle trigger: no traffic (replays excluded) for this long; None turns it off.
    idle_minutes: float | None = Field(default=30.0, gt=0)
    cron: list[CronWindowSettings] = Field(default_factory=list)
    # An ICS calendar file, re-read when it changes. "events": its events whose summary
    # contains `calendar_marker` are windows; "free": gaps of at least
    # `calendar_min_minutes` between its busy events are windows.
    calendar: Path | None = None
    calendar_mode: Literal["events", "free"] = "events"
    calendar_marker: str = "molt-training"
    calendar_min_minutes: float = Field(default=60.0, gt=0)
    # Zone of the calendar's floating times and all-day dates.
    calendar_timezone: str = "UTC"
    # In a cron or calendar window a job starts (or resumes) only after this long without
    # traffic, so that a busy agent does not make it start and pause over and over.
    quiet_minutes: float = Field(default=5.0, ge=0)
    # Per window: the most minutes and optimiser steps a job may spend in it.
    budget_minutes: float = Field(default=15.0, gt=0)
    budget_steps: int = Field(default=200, ge=1)
    # A process holding a tenant's lease renews it every tick; another process may take
    # it over once it has not been renewed for this long (the holder died).
    lease_ttl_s: float = Field(default=60.0, gt=0)
    # How often the scheduler looks at windows, traffic and cancel requests (this bounds
    # how fast returning traffic pauses a job).
    tick_s: float = Field(default=2.0, gt=0)
    # Job folders (frozen data split, checkpoints, artifact); default `<data_dir>/training`.
    work_dir: Path | None = None
    # The local model route (alias) the jobs train; default: the first local route.
    model: str | None = None
    # "lora_rl": LoRA RL with step rewards (trainer/rl.py); "ttt": in-place test-time
    # training, its TTT layers and then the overnight fast-weight delta (trainer/ttt.py).
    method: Literal["lora_rl", "ttt"] = "lora_rl"
    # Overrides of trainer.ttt_config.TTTTrainConfig fields (method "ttt").
    ttt: dict[str, Any] = Field(default_factory=dict)
    # Overrides of trainer.rl_config.RLConfig, trainer.gate_config.GateConfig and
    # trainer.data.DataConfig fields (e.g. rl = { max_steps = 60, learning_rate = 1e-3 }).
    rl: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    # The live watch (trainer/rollback.py): how often it reads promoted versions' live record
    # (None: never), and overrides of its WatchConfig fields.
    watch_s: float | None = Field(default=60.0, gt=0)
    watch: dict[str, Any] = Field(default_factory=dict)

    def jobs_dir(self, data_dir: Path) -> Path:
        return self.work_dir if self.work_dir is not None else data_dir / "training"


class TafcSettings(BaseModel):
    """Think-augmented function calling (proxy/tafc.py); per-tenant overrides in tenants.settings.

    `mode`: "off", "function" (a `think` property first in every enabled tool), or
    "parameter" (also `{think, value}` for each parameter whose complexity exceeds
    `tau`). `tools`: only these tool names (empty: every tool).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "function", "parameter"] = "off"
    tau: float = Field(default=0.6, ge=0.0, le=1.0)
    tools: list[str] = Field(default_factory=list)


class TTTTenantLimits(BaseModel):
    """One tenant's own TTT session limits (`[ttt_sessions.tenants.<name>]`); a field left
    out takes `tenant_max_sessions` / `tenant_max_mb`."""

    model_config = ConfigDict(extra="forbid")

    max_sessions: int | None = Field(default=None, ge=1)
    max_mb: float | None = Field(default=None, gt=0)


class TTTSessionSettings(BaseModel):
    """The per-session fast weights of TTT-enabled versions served locally
    (proxy/local/ttt_sessions.py). The limits apply to each local model of this process
    on its own (each has its own session store).

    A session's state is dropped at `X-Session-Done`, after `idle_s` without a request,
    or, least recently used first, when the states of all of that model's sessions
    together pass `max_mb` (taken from the tenant that holds the most), or when one
    tenant's states pass that tenant's `tenant_max_sessions` or `tenant_max_mb` (taken
    from that tenant only). `tenants.<name>` overrides the per-tenant limits for one
    tenant (by name). Unset per-tenant limits: no count limit, and `max_mb` for bytes,
    which is today's single-tenant behaviour. A state in use by a running request is
    never dropped.
    """

    model_config = ConfigDict(extra="forbid")

    idle_s: float = Field(default=900.0, gt=0)
    max_mb: float = Field(default=1024.0, gt=0)
    tenant_max_sessions: int | None = Field(default=None, ge=1)
    tenant_max_mb: float | None = Field(default=None, gt=0)
    tenants: dict[str, TTTTenantLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tenant_caps_fit(self) -> TTTSessionSettings:
        caps = [("tenant_max_mb", self.tenant_max_mb)] + [
            (f"tenants.{name}.max_mb", t.max_mb) for name, t in self.tenants.items()]
        for where, mb in caps:
            if mb is not None and mb > self.max_mb:
                raise ValueError(f"ttt_sessions.{where} = {mb:g} is over ttt_sessions.max_mb = "
                                 f"{self.max_mb:g} (the cap of all tenants together): a "
                                 "tenant's cap must fit inside it")
        for name in self.tenants:
            if not name.strip():
                raise ValueError("ttt_sessions.tenants has an empty tenant name")
        return self

    def max_bytes(self) -> int:
        return _mb(self.max_mb)

    def tenant_limits(self, tenant: str) -> tuple[int | None, int | None]:
        """`tenant`'s own most sessions and most bytes (None: no limit of its own; its
        states then count only towards `max_mb`)."""
        own = self.tenants.get(tenant, TTTTenantLimits())
        sessions = own.max_sessions if own.max_sessions is not None else self.tenant_max_sessions
        mb = own.max_mb if own.max_mb is not None else self.tenant_max_mb
        return sessions, None if mb is None else _mb(mb)


def _mb(mb: float) -> int:
    return int(mb * 1024 * 1024)


class OtelSettings(BaseModel):
    """Each recorded turn as an OTLP span with the OpenTelemetry GenAI attributes (store/otel.py).

    Sent after the recorder has written the turn, from a thread of its own: a slow
    or absent collector never slows or fails a request or a recording. Prompts and
    answers are attributes only with `capture_content` (they are what users typed).
    Collector headers (an API key) come from the standard `OTEL_EXPORTER_OTLP_HEADERS`.
    """

    model_config = ConfigDict(extra="forbid")

    # An OTLP/HTTP (protobuf) collector: "http://host:4318" (`/v1/traces` is appended) or
    # the full traces URL. None: no spans.
    endpoint: str | None = None
    capture_content: bool = False
    service_name: str = "molt"
    # Turns waiting to become spans; past this they are dropped and counted.
    queue_size: int = Field(default=4096, ge=1)
    # An export to the collector (the exporter's own retries included) gives up after this
    # long; the spans of a failed export are dropped and counted.
    timeout_s: float = Field(default=10.0, gt=0)


class MoltSettings(BaseSettings):
    """Everything molt can be told. Built by `molt.config.load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="MOLT_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".molt")
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    recorder: RecorderSettings = Field(default_factory=RecorderSettings)
    models: list[ModelRoute] = Field(default_factory=list)
    # The weight-version registry: a folder (a shared mount for several processes), or a
    # URL read through fsspec (`s3://bucket/molt-registry`, `file:///srv/registry`);
    # None means `data_dir / "registry"`.
    registry_dir: str | Path | None = None
    # Retention: candidates kept per tenant and base (older ones are removed).
    registry_keep_candidates: int = 10
    skills: SkillsSettings = Field(default_factory=SkillsSettings)
    evolver: EvolverSettings = Field(default_factory=EvolverSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    tafc: TafcSettings = Field(default_factory=TafcSettings)
    ttt_sessions: TTTSessionSettings = Field(default_factory=TTTSessionSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)

    @model_validator(mode="after")
    def _unique_aliases(self) -> MoltSettings:
        seen: set[str] = set()
        for route in self.models:
            if route.alias in seen:
                raise ValueError(f"model alias {route.alias!r} is configured twice")
            seen.add(route.alias)
        for route in self.models:
            missing = [f for f in route.fallbacks if f not in seen]
            if missing:
                raise ValueError(f"model alias {route.alias!r} falls back to unknown alias(es) "
                                 f"{', '.join(map(repr, missing))}; known: {', '.join(sorted(seen))}")
        if self.environment == "production" and self.server.admin_key is not None:
            secret = self.server.admin_key.get_secret_value()
            if len(secret) < 16 or secret.lower() in {"changeme", "secret", "admin", "password"}:
                raise ValueError("server.admin_key is a placeholder; set a real secret")
        return self

    def registry_root(self) -> str | Path:
        """The registry's folder, or its URL as written (one with `://`)."""
        if self.registry_dir is None:
            return self.data_dir / "registry"
        d = self.registry_dir
        return d if isinstance(d, str) and "://" in d else Path(d)

    def route(self, alias: str) -> ModelRoute | None:
        for r in self.models:
            if r.alias == alias:
                return r
        return None
