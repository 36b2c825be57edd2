"""Plain data records passed between the proxy, the recorder and the store."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

JSON = dict[str, Any]

TURN_STATUSES = ("ok", "error", "upstream_error", "client_disconnected")
FEEDBACK_SOURCES = ("user", "judge", "verifier", "tool")


@dataclass(slots=True)
class TurnRecord:
    """One model call as the recorder writes it.

    For a streamed call the proxy keeps the raw SSE bytes in `stream_chunks`
    and the recorder assembles `response` from them off the request path.
    """

    id: str
    tenant_id: str
    session_id: str
    idx: int
    turn_type: str
    created_at: float
    request_model: str
    stream: bool
    request: JSON
    session_external_id: str | None = None
    session_done: bool = False
    upstream: str | None = None
    upstream_request: JSON | None = None
    response: JSON | None = None
    stream_chunks: list[bytes] | None = None
    # A non-streamed upstream body kept as bytes; parsed by the recorder.
    response_bytes: bytes | None = None
    status: str = "ok"
    http_status: int | None = None
    error: JSON | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    weight_version: str | None = None
    skill_generation: int | None = None
    injected_skills: list[JSON] | None = None
    # the tool overlays laid over the request's tools ({id, version, tool, param} each;
    # [] none applied, None: no overlay hook ran): store/tool_overlays.py
    tool_overlays: list[JSON] | None = None
    context_version: str | None = None
    request_hash: str | None = None
    # A Responses turn that a follow-up may continue: the first of its request
    # messages a `previous_response_id` carries on (None: not continuable).
    followup_from: int | None = None
    # Filled from `response` by the recorder.
    response_model: str | None = None
    content: str | None = None
    tool_calls: list[JSON] | None = None
    think: list[JSON] | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # The recorder's own bookkeeping (never stored as columns): when the turn was
    # queued (monotonic clock) and the spool segment that holds it, if any.
    queued_at: float | None = None
    spool_segment: str | None = None
    # Called once by the recorder when the response has been read (usage filled in):
    # the rate limiter's count of the tokens the turn used.
    on_recorded: Callable[[TurnRecord], None] | None = None


_BOOKKEEPING = ("queued_at", "spool_segment", "on_recorded")
_BYTES_FIELDS = ("response_bytes",)


def turn_to_json(rec: TurnRecord) -> JSON:
    """A JSON-ready dict of `rec` (bytes as base64), for the spool and spill files."""
    out: JSON = {}
    for f in fields(rec):
        name = f.name
        value = getattr(rec, name)
        if name in _BOOKKEEPING or value is None:
            continue
        if name == "stream_chunks":
            value = [base64.b64encode(b"".join(value)).decode("ascii")]
        elif name in _BYTES_FIELDS:
            value = base64.b64encode(value).decode("ascii")
        out[name] = value
    return out


def turn_from_json(data: JSON) -> TurnRecord:
    """The inverse of `turn_to_json`; KeyError/TypeError/ValueError on a malformed line."""
    known = {f.name for f in fields(TurnRecord)} - set(_BOOKKEEPING)
    kwargs = {k: v for k, v in data.items() if k in known}
    if "stream_chunks" in kwargs:
        kwargs["stream_chunks"] = [base64.b64decode(c) for c in kwargs["stream_chunks"]]
    for name in _BYTES_FIELDS:
        if name in kwargs:
            kwargs[name] = base64.b64decode(kwargs[name])
    return TurnRecord(**kwargs)


@dataclass(slots=True)
class FeedbackRecord:
    id: str
    tenant_id: str
    source: str
    created_at: float
    session_id: str | None = None
    turn_id: str | None = None
    score: float | None = None
    text: str | None = None
    meta: JSON | None = None


@dataclass(slots=True)
class SessionSummary:
    id: str
    tenant: str
    external_id: str | None
    turns: int
    started_at: float
    last_turn_at: float
    done: bool


@dataclass(slots=True)
class SessionDetail:
    summary: SessionSummary
    turns: list[JSON] = field(default_factory=list)
    feedback: list[JSON] = field(default_factory=list)
