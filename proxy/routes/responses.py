"""POST /v1/responses: the OpenAI Responses adapter over `proxy.turn_flow`.

The route checks the Responses body, resolves `previous_response_id` (the
caller's tenant only: `proxy.responses.followup`), translates the request to
the internal chat body and hands it to the shared core, so skills, context,
TAFC, sessions and recording work as for chat: the turn is recorded in the
chat form, with `followup_from` saying where a follow-up continues it. The
answer goes back as a Response object (`resp_<hex>` for the turn `turn_<hex>`)
or as the Responses streaming events. Errors are the OpenAI envelope
(`proxy.app`'s handler), with the turn's headers once it was recorded.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from proxy.deps import get_state
from proxy.protocol import read_json, validate_chat
from proxy.responses.followup import resolve
from proxy.responses.output import from_completion, response_id
from proxy.responses.request import chat_body, parse_request
from proxy.responses.stream import ResponsesEncoder, ResponsesStream
from proxy.streaming import PassThroughStream
from proxy.turn_flow import CLIENT_CLOSED, ClientLeft, Completed, TurnInput, run_turn
from store.records import TurnRecord

router = APIRouter()


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    state = get_state(request)
    started = time.perf_counter()
    principal = await state.auth.authenticate(request.headers)
    req = parse_request(await read_json(request, state.settings.server.max_body_bytes))
    history = None
    if req.previous_response_id is not None:
        tenant = request.headers.get("x-molt-tenant")
        owner = await state.auth.on_behalf(principal, tenant) if tenant else principal
        history = await resolve(req.previous_response_id, owner.tenant_id, state.responses, state.db)
    turn = chat_body(req, history)
    body = validate_chat(turn.body)
    ticket = state.limiter.admit(principal, body, request.scope)  # 429 over the key's limits

    def opened(rec: TurnRecord) -> None:
        rec.followup_from = turn.followup_from
        state.responses.remember(rec)

    outcome = await run_turn(state, TurnInput(body, principal, request.headers, request.receive,
                                              started, ticket, on_open=opened))
    resp_id = response_id(outcome.headers["x-molt-turn-id"])
    if isinstance(outcome, Completed):
        return JSONResponse(from_completion(resp_id, req, outcome.data), headers=outcome.headers)
    if isinstance(outcome, ClientLeft):
        return Response(status_code=CLIENT_CLOSED, headers=outcome.headers)
    return PassThroughStream(outcome, ResponsesEncoder(ResponsesStream(resp_id, req)))
