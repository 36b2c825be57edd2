"""POST /v1/feedback: a score and/or text on a turn or a session of the caller's tenant.

The caller's tenant is its key's (a global admin may name one in `x-molt-tenant`).

The turn and the session must both be the caller's tenant's and, when both
are named, belong to each other; anything else is refused before a row is
written. The body is read with a limit (413), and a store failure answers
500 without its message, which can hold the SQL parameters.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from proxy.auth import Principal
from proxy.deps import Caller, State
from proxy.errors import InvalidRequest, NotFoundError, ProxyError
from proxy.protocol import FeedbackIn, read_json
from proxy.state import ProxyState
from store.errors import InvalidInput, NotFound, StoreError

log = logging.getLogger("molt.proxy.feedback")

router = APIRouter()

# A feedback body is a score, up to 20,000 characters of text and a small meta object.
FEEDBACK_MAX_BYTES = 256 * 1024


def _parse(body: Any) -> FeedbackIn:
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_type")
    try:
        return FeedbackIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        msg = str(first.get("msg", "invalid feedback")).removeprefix("Value error, ")
        raise InvalidRequest(f"{param}: {msg}" if param else msg, param=param,
                             code="invalid_value") from None


async def _resolve(state: ProxyState, caller: Principal, item: FeedbackIn) -> str:
    """The session the feedback is about; NotFoundError unless the caller's tenant owns it."""
    ts = state.trajectories
    turn: dict[str, Any] | None = None
    try:
        if item.turn_id:
            turn = await ts.get_turn(item.turn_id, tenant_id=caller.tenant_id)
            if not item.session_id or item.session_id == turn["session_id"]:
                return str(turn["session_id"])
        assert item.session_id
        named = await ts.session_summary(item.session_id, tenant_id=caller.tenant_id)
    except NotFound as exc:
        missing = "turn_id" if item.turn_id and turn is None else "session_id"
        raise NotFoundError(f"no such turn or session: {exc}", param=missing) from exc
    if turn is not None and named.id != turn["session_id"]:
        raise InvalidRequest(f"turn {item.turn_id!r} is not a turn of session {item.session_id!r}",
                             param="session_id", code="session_mismatch")
    return named.id


# The body is read by hand (with a limit), so its schema is given to OpenAPI here.
_BODY_SCHEMA = {"required": True,
                "content": {"application/json": {"schema": FeedbackIn.model_json_schema()}}}


@router.post("/v1/feedback", openapi_extra={"requestBody": _BODY_SCHEMA})
async def post_feedback(request: Request, state: State, caller: Caller) -> dict[str, Any]:
    limit = min(FEEDBACK_MAX_BYTES, state.settings.server.max_body_bytes)
    item = _parse(await read_json(request, limit))
    if request.headers.get("x-molt-tenant"):  # a global admin filing for a tenant
        caller = await state.auth.on_behalf(caller, request.headers["x-molt-tenant"])
    try:
        session_id = await _resolve(state, caller, item)
    except NotFoundError:
        # The turn may still sit in the recorder's queue: write it, then look again.
        await state.recorder.flush()
        session_id = await _resolve(state, caller, item)
    try:
        rec = await state.feedback.add(
            tenant_id=caller.tenant_id, session_id=session_id, turn_id=item.turn_id,
            score=item.score, text=item.text, source=item.source, meta=item.meta,
        )
    except InvalidInput as exc:
        raise InvalidRequest(str(exc), code="invalid_value") from exc
    except StoreError as exc:
        log.error("feedback not stored: %s", exc)  # the store's message: a type, no data
        raise ProxyError("feedback could not be stored", code="store_error") from exc
    return {
        "id": rec.id, "object": "feedback", "turn_id": rec.turn_id, "session_id": rec.session_id,
        "score": rec.score, "text": rec.text, "source": rec.source, "created_at": rec.created_at,
    }
