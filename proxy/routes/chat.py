"""POST /v1/chat/completions: the hot path.

Auth, session, hooks (injection), then the upstream; the non-streamed body and
the streamed bytes go back to the client untouched, and the turn is handed to
the recorder, which never slows or fails the request.

A non-streamed upstream body is parsed once here (the recorder reuses the
result): one that is not a JSON object is a 502, never passed on as a 200.
A client that leaves while molt waits for the upstream cancels the upstream
call; its turn is recorded as `client_disconnected`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from proxy.deps import get_state
from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from proxy.hooks import TurnContext
from proxy.protocol import read_json, session_headers, validate_chat
from proxy.sessions import SessionRef, answer_message
from proxy.state import ProxyState
from proxy.streaming import ClientGone, PassThroughStream, unless_client_leaves
from proxy.tafc import strip_completion, tafc_record
from proxy.tafc_stream import StreamStripper, strip_sse
from proxy.upstream.base import UpstreamCall
from store.ids import new_id
from store.records import TurnRecord

router = APIRouter()
# nginx's "client closed request": recorded, never sent (nobody is there to read it).
CLIENT_CLOSED = 499


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


def _record(state: ProxyState, ctx: TurnContext, body: dict[str, Any], upstream_body: dict[str, Any], stream: bool) -> TurnRecord:
    return TurnRecord(
        id=ctx.turn_id,
        tenant_id=ctx.principal.tenant_id,
        session_id=ctx.session.id,
        idx=ctx.session.idx,
        turn_type=ctx.session.turn_type,
        created_at=time.time(),
        request_model=body["model"],
        stream=stream,
        request=body,
        session_external_id=ctx.session.external_id,
        session_done=ctx.session.done,
        upstream_request=upstream_body if upstream_body is not body else None,
        skill_generation=ctx.skill_generation,
        injected_skills=ctx.injected_skills,
        context_version=ctx.context_version,
        request_hash=ctx.session.request_hash,
    )


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    state = get_state(request)
    started = time.perf_counter()
    principal = await state.auth.authenticate(request.headers)
    body = validate_chat(await read_json(request, state.settings.server.max_body_bytes))
    alias, version, backend = state.upstreams.resolve(body["model"])
    replay = request.headers.get("x-molt-replay")
    if replay or request.headers.get("x-molt-tenant"):
        principal = await state.auth.on_behalf(
            principal, request.headers.get("x-molt-tenant") or principal.tenant)
    if replay:
        # The evolver replaying a recorded turn: its own session, never an agent's.
        session = SessionRef(new_id("ses"), 0, None, "replay", True, "")
    else:
        session = await state.sessions.resolve(
            principal.tenant_id, session_headers(request.headers), body["messages"])
    ctx = TurnContext(new_id("turn"), principal, session, alias, version, started)
    if replay:
        ctx.notes["replay"] = replay
        if request.headers.get("x-molt-context"):
            ctx.notes["context"] = request.headers["x-molt-context"]
    upstream_body = body
    for hook in state.request_hooks:
        upstream_body = await hook(ctx, upstream_body)
    stream = bool(body.get("stream"))
    rec = _record(state, ctx, body, upstream_body, stream)
    headers = {"x-molt-turn-id": ctx.turn_id, "x-molt-session-id": session.id}
    if session.done and not replay:
        state.sessions.forget(principal.tenant_id, session)
    m = state.metrics
    rec.upstream = getattr(backend, "name", None)

    def failed(exc: ProxyError) -> ProxyError:
        rec.status = "upstream_error" if isinstance(exc, UpstreamError) else "error"
        rec.http_status = exc.status
        rec.error = exc.envelope()["error"]
        rec.latency_ms = (time.perf_counter() - started) * 1000
        state.recorder.submit(rec)
        m.requests.labels(alias, str(exc.status)).inc()
        m.upstream_errors.labels(alias, "timeout" if isinstance(exc, UpstreamTimeout) else "error").inc()
        exc.headers = headers  # type: ignore[attr-defined]
        return exc

    call = UpstreamCall(alias, version, upstream_body, stream, principal.tenant_id, ctx.turn_id,
                        principal.tenant, session_id=session.id, session_done=session.done)
    try:
        resp = await unless_client_leaves(request.receive, backend.send(call))
    except ClientGone as gone:
        rec.status = "client_disconnected"
        rec.http_status = CLIENT_CLOSED
        rec.error = {"message": str(gone), "type": "client_disconnected", "param": None,
                     "code": None}
        rec.latency_ms = (time.perf_counter() - started) * 1000
        state.recorder.submit(rec)
        m.requests.labels(alias, str(CLIENT_CLOSED)).inc()
        return Response(status_code=CLIENT_CLOSED, headers=headers)
    except ProxyError as exc:
        raise failed(exc) from None
    rec.upstream = resp.upstream
    rec.weight_version = resp.served_version
    if resp.dropped_blocks:  # what the model saw: no skills, no context block
        rec.injected_skills, rec.context_version = [], None
        headers["x-molt-blocks-dropped"] = "context_length"
    if resp.served_version:
        headers["x-molt-weight-version"] = resp.served_version

    if resp.chunks is None:
        if resp.body is not None:
            try:
                data = upstream_completion(resp.body, resp.upstream)
            except UpstreamError as exc:
                rec.response = {"unparsed": resp.body[:10_000].decode("utf-8", "replace")}
                raise failed(exc) from None
        else:
            data = resp.data if resp.data is not None else {}
        if ctx.tafc:  # what molt added to the tools comes off the answer; think to the turn
            thinks, flags = strip_completion(data, ctx.tafc)
            rec.think = tafc_record(thinks, flags)
        if resp.body is not None and not state.response_hooks and not ctx.tafc:
            payload = resp.body  # valid: passed through untouched
        else:
            for rhook in state.response_hooks:
                data = rhook(ctx, data)
            payload = json.dumps(data).encode()
        rec.response = data
        state.sessions.answered(principal.tenant_id, session, answer_message(data))
        elapsed = time.perf_counter() - started
        rec.latency_ms = elapsed * 1000
        rec.http_status = 200
        state.recorder.submit(rec)
        m.requests.labels(alias, "200").inc()
        m.latency.labels(alias, "false").observe(elapsed)
        return Response(payload, media_type="application/json", headers=headers)

    # The chunks as they go out: a continuation can follow this answer as soon as the
    # client has it, before the stream's own bookkeeping below has run.
    kept: list[bytes] = []
    rec.stream_chunks = kept
    state.sessions.answered_stream(principal.tenant_id, session, rec)
    chunks = resp.chunks
    stripper = StreamStripper(ctx.tafc) if ctx.tafc else None
    if stripper is not None:
        chunks = strip_sse(resp.chunks, stripper)

    def finish(status: str, kept: list[bytes], ttft: float | None, error: ProxyError | None) -> None:
        elapsed = time.perf_counter() - started
        rec.status = status
        rec.stream_chunks = kept
        rec.latency_ms = elapsed * 1000
        rec.ttft_ms = ttft * 1000 if ttft is not None else None
        rec.http_status = 200
        if stripper is not None:
            rec.think = tafc_record(stripper.think, stripper.flags)
        if error is not None:
            rec.error = error.envelope()["error"]
            m.upstream_errors.labels(alias, "stream").inc()
        state.recorder.submit(rec)
        m.requests.labels(alias, "200").inc()
        m.latency.labels(alias, "true").observe(elapsed)
        if ttft is not None:
            m.ttft.labels(alias).observe(ttft)

    return PassThroughStream(chunks, resp.aclose, headers, finish, started, kept)
