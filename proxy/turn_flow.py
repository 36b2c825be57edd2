"""The shared core of every model route: one turn, from a validated chat body to an answer.

Every protocol's route (Chat Completions, Anthropic Messages, OpenAI
Responses) is a thin adapter over `run_turn`. The route authenticates,
reads its body, translates it to molt's one internal form (an OpenAI chat
completions body, checked by `proxy.protocol.validate_chat`), admits it
under the caller's rate limits (`proxy.limits`: a 429 `RateLimited` when
over) and calls:

    ticket = state.limiter.admit(principal, body, request.scope)
    outcome = await run_turn(state, TurnInput(body, principal, request.headers,
                                              request.receive, started, ticket))

`run_turn` does everything else, the same for every protocol: the model
route, `X-Molt-Tenant` and an evolver replay (`X-Molt-Replay`, parsed once
into `TurnContext.replay`), the session, the request hooks (skills, context,
TAFC), the upstream call (cancelled if the client leaves), TAFC stripping,
the response hooks, the session's continuation ticket, and the turn's record
(`proxy.turn_record`: always recorded, whatever the ending). It returns one of:

- `Completed` (non-streamed): `data`, the chat completion as a dict, and
  `raw`, the upstream's bytes when `data` is exactly them (None when molt
  changed the answer). The chat route sends `raw` untouched when it has it;
  another route translates `data`.
- `TurnStream` (streamed, `proxy.streaming`): `chunks`, OpenAI
  `chat.completion.chunk` SSE bytes as the upstream cut them. Return
  `PassThroughStream(stream)` to pass them through (chat), or
  `PassThroughStream(stream, encoder)` with a `StreamEncoder` that translates
  each chunk (`proxy.sse_assembly.SSEEvents` reads the events incrementally).
  The response records the turn from the upstream chunks, so every protocol's
  turn is stored in the same format.
- `ClientLeft`: the client went away before the upstream answered; the turn
  is recorded as `client_disconnected`, answer `Response(status_code=CLIENT_CLOSED)`.

Native upstreams: a route may also pass `TurnInput.native`, its request in
its own protocol. A backend that speaks that protocol sends it (with molt's
blocks) and answers in it; then `Completed.native` holds the upstream's bytes
to send as they are (`data` is their internal form), and a `TurnStream` with
`native` set carries the upstream's own events in `chunks` (pass them through),
while the turn is recorded from their internal form. TAFC's stripping and the
response hooks do not apply to such answers: they reach the client unchanged.

Every outcome carries `headers` (`x-molt-turn-id`, `x-molt-session-id`, and
`x-molt-blocks-dropped` / `x-molt-weight-version` when they apply) for the
route to send. A failure raises a `ProxyError`; once the turn exists its
`headers` field carries those headers and the turn is recorded. Render it in
the route's protocol (`exc.status`, `exc.message`, `exc.type`, `exc.code`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive

from proxy.auth import Principal
from proxy.errors import ProxyError, UpstreamError
from proxy.hooks import TurnContext
from proxy.limits import UNLIMITED, Ticket
from proxy.protocol import session_headers
from proxy.replay import Replay
from proxy.sessions import SessionRef
from proxy.state import ProxyState
from proxy.streaming import ClientGone, StreamStatus, TurnStream, unless_client_leaves
from proxy.tafc import strip_completion, tafc_record
from proxy.tafc_stream import StreamStripper, strip_sse
from proxy.turn_record import CLIENT_CLOSED, TurnFinish, open_record, status_of
from proxy.upstream.base import NativeRequest, UpstreamCall
from store.chat_shapes import answer_message
from store.ids import new_id
from store.records import TurnRecord

__all__ = ["CLIENT_CLOSED", "ClientLeft", "Completed", "TurnInput", "TurnOutcome", "TurnStream",
           "run_turn", "upstream_completion"]


@dataclass(slots=True)
class TurnInput:
    """What a route hands the core."""

    body: dict[str, Any]  # the internal chat body, already through `validate_chat`
    principal: Principal  # the authenticated caller
    headers: Mapping[str, str]  # the request's headers (session, tenant, replay)
    receive: Receive  # the ASGI receive channel: a disconnect cancels the upstream call
    started: float  # time.perf_counter() when the request arrived
    # The caller's rate-limit ticket (`state.limiter.admit`), told the turn's recorded usage.
    ticket: Ticket = UNLIMITED
    # the request in the client's own protocol, for a route whose upstream speaks it
    native: NativeRequest | None = None
    # Called with the turn's record as soon as it is opened, before the upstream call:
    # a route that keeps state per turn (Responses: `followup_from`, its recent answers).
    on_open: Callable[[TurnRecord], None] | None = None


@dataclass(slots=True)
class Completed:
    """A non-streamed answer, recorded."""

    data: dict[str, Any]  # the chat completion the client gets (TAFC stripped, hooks applied)
    raw: bytes | None  # the upstream's own bytes when they are `data` unchanged
    headers: dict[str, str]
    # a native upstream's bytes, in the client's protocol: sent as they are (`data` is
    # their internal form, as recorded)
    native: bytes | None = None


@dataclass(slots=True)
class ClientLeft:
    """The client left before the upstream answered; recorded as `client_disconnected`."""

    headers: dict[str, str]


TurnOutcome = Completed | TurnStream | ClientLeft


def upstream_completion(raw: bytes, upstream: str) -> dict[str, Any]:
    """A non-streamed upstream body as a dict; anything else is the upstream's fault."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UpstreamError(
            f"upstream {upstream} returned HTTP 200 with a body that is not valid JSON",
            code="upstream_invalid_response") from exc
    if not isinstance(data, dict):
        raise UpstreamError(
            f"upstream {upstream} returned HTTP 200 with a JSON {type(data).__name__}, "
            "not a chat completion object", code="upstream_invalid_response")
    return data


async def _context(state: ProxyState, turn: TurnInput, alias: str,
                   version: str | None) -> TurnContext:
    """Who asks (`X-Molt-Tenant`), whether it is a replay, and which session it is in."""
    headers, principal = turn.headers, turn.principal
    replay = Replay.from_headers(headers)
    tenant = headers.get("x-molt-tenant")
    if replay is not None or tenant:
        principal = await state.auth.on_behalf(principal, tenant or principal.tenant)
    if replay is not None:
        # The evolver replaying a recorded turn: its own session, never an agent's.
        session = SessionRef(new_id("ses"), 0, None, "main", True, "")
    else:
        session = await state.sessions.resolve(
            principal.tenant_id, session_headers(headers), turn.body["messages"])
    return TurnContext(new_id("turn"), principal, session, alias, version, turn.started,
                       replay=replay)


async def run_turn(state: ProxyState, turn: TurnInput) -> TurnOutcome:
    """One turn through molt (see the module docstring for what a route does with it)."""
    body = turn.body
    alias, version, backend = state.upstreams.resolve(body["model"])
    ctx = await _context(state, turn, alias, version)
    upstream_body = body
    for hook in state.request_hooks:
        upstream_body = await hook(ctx, upstream_body)
    stream = bool(body.get("stream"))
    rec = open_record(ctx, body, upstream_body, stream)
    rec.on_recorded = turn.ticket.recorded
    if turn.on_open is not None:
        turn.on_open(rec)
    rec.upstream = getattr(backend, "name", None)
    session, tenant_id = ctx.session, ctx.principal.tenant_id
    headers = {"x-molt-turn-id": ctx.turn_id, "x-molt-session-id": session.id}
    if session.done and ctx.replay is None:
        state.sessions.forget(tenant_id, session)
    finish = TurnFinish(state, rec, alias, turn.started)

    def failed(exc: ProxyError) -> ProxyError:
        finish(status_of(exc), exc.status, error=exc)
        exc.headers.update(headers)
        return exc

    call = UpstreamCall(alias, version, upstream_body, stream, tenant_id, ctx.turn_id,
                        ctx.principal.tenant, session_id=session.id, session_done=session.done,
                        native=turn.native)
    try:
        resp = await unless_client_leaves(turn.receive, backend.send(call))
    except ClientGone as gone:
        finish("client_disconnected", CLIENT_CLOSED, message=str(gone))
        return ClientLeft(headers)
    except ProxyError as exc:
        raise failed(exc) from None
    rec.upstream = resp.upstream
    rec.weight_version = resp.served_version
    if resp.dropped_blocks:  # what the model saw: no skills, no context block
        rec.injected_skills, rec.context_version = [], None
        headers["x-molt-blocks-dropped"] = "context_length"
    if resp.served_version:
        headers["x-molt-weight-version"] = resp.served_version

    if resp.chunks is None and resp.native:
        # The client's protocol, answered by the upstream itself: its bytes go back as
        # they are; `data` (their internal form) is what molt records and tracks.
        data = resp.data if resp.data is not None else {}
        rec.response = data
        state.sessions.answered(tenant_id, session, answer_message(data))
        finish("ok", 200)
        return Completed(data, None, headers, native=resp.body)

    if resp.chunks is None:
        raw = resp.body
        if raw is not None:
            try:
                data = upstream_completion(raw, resp.upstream)
            except UpstreamError as exc:
                rec.response = {"unparsed": raw[:10_000].decode("utf-8", "replace")}
                raise failed(exc) from None
        else:
            data = resp.data if resp.data is not None else {}
        if ctx.tafc:  # what molt added to the tools comes off the answer; think to the turn
            thinks, flags = strip_completion(data, ctx.tafc)
            rec.think = tafc_record(thinks, flags)
            raw = None
        for rhook in state.response_hooks:
            data = rhook(ctx, data)
            raw = None
        rec.response = data
        state.sessions.answered(tenant_id, session, answer_message(data))
        finish("ok", 200)
        return Completed(data, raw, headers)

    # The chunks as they go out: a continuation can follow this answer as soon as the
    # client has it, before the stream's own bookkeeping below has run.
    kept: list[bytes] = []
    # A native stream's internal form fills beside its bytes (UpstreamResponse.internal_chunks).
    internal = resp.internal_chunks if resp.native and resp.internal_chunks is not None else None
    rec.stream_chunks = internal if internal is not None else kept
    state.sessions.answered_stream(tenant_id, session, rec)
    chunks = resp.chunks
    stripper = StreamStripper(ctx.tafc) if ctx.tafc and internal is None else None
    if stripper is not None:
        chunks = strip_sse(resp.chunks, stripper)

    def stream_end(status: StreamStatus, kept: list[bytes], ttft: float | None,
                   error: ProxyError | None) -> None:
        rec.stream_chunks = internal if internal is not None else kept
        if stripper is not None:
            rec.think = tafc_record(stripper.think, stripper.flags)
        finish(status, 200, error=error, ttft=ttft)

    return TurnStream(chunks, resp.aclose, headers, stream_end, turn.started, kept,
                      native=internal is not None)
