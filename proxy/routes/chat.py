"""POST /v1/chat/completions: the OpenAI Chat Completions adapter over `proxy.turn_flow`.

Chat is molt's internal form, so the adapter only authenticates, checks the
body and hands it to the shared core; the upstream's non-streamed body and
its streamed bytes go back to the client untouched (unless molt changed the
answer: TAFC, a response hook). Errors are the OpenAI envelope
(`proxy.app`'s handler), with the turn's headers once it was recorded.
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from proxy.deps import get_state
from proxy.protocol import read_json, validate_chat
from proxy.streaming import PassThroughStream
from proxy.turn_flow import CLIENT_CLOSED, ClientLeft, Completed, TurnInput, run_turn

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    state = get_state(request)
    started = time.perf_counter()
    principal = await state.auth.authenticate(request.headers)
    body = validate_chat(await read_json(request, state.settings.server.max_body_bytes))
    ticket = state.limiter.admit(principal, body, request.scope)  # 429 over the key's limits
    outcome = await run_turn(state, TurnInput(body, principal, request.headers, request.receive,
                                              started, ticket))
    if isinstance(outcome, Completed):
        payload = outcome.raw if outcome.raw is not None else json.dumps(outcome.data).encode()
        return Response(payload, media_type="application/json", headers=outcome.headers)
    if isinstance(outcome, ClientLeft):
        return Response(status_code=CLIENT_CLOSED, headers=outcome.headers)
    return PassThroughStream(outcome)
