"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API.

A thin adapter over the shared core (`proxy.turn_flow`): authenticate
(`x-api-key` or `Authorization: Bearer`; `anthropic-version` is accepted
whatever it says), translate the body to the internal chat form
(`proxy.anthropic.request`), run the turn (sessions, skills, context, TAFC
and the record work as for a chat request, and the turn is stored in the
same format), and translate the answer back: a `message` object, or the
Messages event stream. When the model's route speaks Messages itself
(`protocol = "anthropic"`), the client's body goes upstream and the
upstream's bytes come back unchanged; the turn is still recorded in the
internal form. Every error is in Anthropic's shape
(`proxy.anthropic.errors`), with the turn's ids in the headers when the turn
exists; `request-id` carries the turn id as Anthropic's header does. The
key's rate limits apply as on the chat route (429 `rate_limit_error` with
`retry-after`).

count_tokens answers `{"input_tokens": n}` for the request as the client
sends it (molt's blocks are not counted: they depend on the task and the
library at serving time). A route whose backend has the model's tokenizer
(a local model) counts exactly; any other is molt's estimate
(`proxy.anthropic.tokens`). `x-molt-token-count` says which.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from proxy.anthropic.errors import error_event, error_type, proxy_error_body
from proxy.anthropic.request import to_chat
from proxy.anthropic.response import to_message
from proxy.anthropic.stream import MessagesEncoder, MessageStream
from proxy.anthropic.tokens import TokenCounter, estimate_chat_tokens
from proxy.deps import get_state
from proxy.errors import ProxyError
from proxy.protocol import read_json, validate_chat
from proxy.streaming import PassThroughStream
from proxy.turn_flow import CLIENT_CLOSED, ClientLeft, Completed, TurnInput, run_turn
from proxy.upstream.anthropic_http import PASSED_HEADERS
from proxy.upstream.base import NativeRequest

router = APIRouter()


def message_id(turn_id: str) -> str:
    """A Messages id for a turn (`turn_01J...` -> `msg_01J...`): one id names both."""
    return "msg_" + turn_id.removeprefix("turn_")


def _error(exc: ProxyError) -> JSONResponse:
    headers = dict(exc.headers)
    turn_id = headers.get("x-molt-turn-id")
    if turn_id:
        headers["request-id"] = turn_id
    return JSONResponse(proxy_error_body(exc, turn_id), status_code=exc.status, headers=headers)


class NativeEvents:
    """A native upstream's Messages events: passed through; a late failure as an `error` event."""

    def chunk(self, piece: bytes) -> bytes:
        return piece

    def error(self, exc: ProxyError) -> bytes:
        return error_event(error_type(exc.status), exc.message)

    def end(self) -> bytes:
        return b""


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    state = get_state(request)
    started = time.perf_counter()
    try:
        principal = await state.auth.authenticate(request.headers)
        raw: Any = await read_json(request, state.settings.server.max_body_bytes)
        body = validate_chat(to_chat(raw))
        ticket = state.limiter.admit(principal, body, request.scope)  # 429 over the key's limits
        passed = {k: request.headers[k] for k in PASSED_HEADERS if k in request.headers}
        outcome = await run_turn(state, TurnInput(
            body, principal, request.headers, request.receive, started, ticket,
            native=NativeRequest("anthropic", raw, passed)))
    except ProxyError as exc:
        return _error(exc)
    headers = dict(outcome.headers)
    turn_id = headers["x-molt-turn-id"]
    headers["request-id"] = turn_id
    if isinstance(outcome, ClientLeft):
        return Response(status_code=CLIENT_CLOSED, headers=headers)
    if isinstance(outcome, Completed):
        if outcome.native is not None:
            return Response(outcome.native, media_type="application/json", headers=headers)
        msg = to_message(outcome.data, message_id=message_id(turn_id), model=body["model"])
        return JSONResponse(msg, headers=headers)
    outcome.headers = headers
    if outcome.native:
        return PassThroughStream(outcome, NativeEvents())
    stream = MessageStream(message_id=message_id(turn_id), model=body["model"],
                           input_tokens=estimate_chat_tokens(body))
    return PassThroughStream(outcome, MessagesEncoder(stream))


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    state = get_state(request)
    try:
        await state.auth.authenticate(request.headers)
        raw: Any = await read_json(request, state.settings.server.max_body_bytes)
        body = to_chat(raw, need_max_tokens=False)
        _alias, _version, backend = state.upstreams.resolve(body["model"])
        if isinstance(backend, TokenCounter):
            n, how = await backend.count_prompt_tokens(body), "tokenizer"
        else:
            n, how = estimate_chat_tokens(body), "estimate"
    except ProxyError as exc:
        return _error(exc)
    return JSONResponse({"input_tokens": n}, headers={"x-molt-token-count": how})
