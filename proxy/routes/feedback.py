"""POST /v1/feedback: a score and/or text on a turn or a session."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from proxy.auth import Principal
from proxy.deps import Caller, State
from proxy.errors import NotFoundError
from proxy.protocol import FeedbackIn
from proxy.state import ProxyState
from store.errors import NotFound

router = APIRouter()


async def _resolve(state: ProxyState, caller: Principal, item: FeedbackIn) -> str | None:
    """The session the feedback is about; NotFound if the turn or session is unknown to the caller."""
    if item.turn_id:
        turn = await state.trajectories.get_turn(item.turn_id)
        if turn["tenant_id"] != caller.tenant_id:
            raise NotFound(item.turn_id)
        return item.session_id or str(turn["session_id"])
    assert item.session_id
    detail = await state.trajectories.get_session(item.session_id)
    if not caller.is_admin and detail.summary.tenant != caller.tenant:
        raise NotFound(item.session_id)
    return detail.summary.id


@router.post("/v1/feedback")
async def post_feedback(item: FeedbackIn, state: State, caller: Caller) -> dict[str, Any]:
    try:
        session_id = await _resolve(state, caller, item)
    except NotFound:
        # The turn may still sit in the recorder's queue: write it, then look again.
        await state.recorder.flush()
        try:
            session_id = await _resolve(state, caller, item)
        except NotFound as exc:
            raise NotFoundError(f"no such turn or session: {exc}",
                                param="turn_id" if item.turn_id else "session_id") from exc
    rec = await state.feedback.add(
        tenant_id=caller.tenant_id, session_id=session_id, turn_id=item.turn_id,
        score=item.score, text=item.text, source=item.source, meta=item.meta,
    )
    return {
        "id": rec.id, "object": "feedback", "turn_id": rec.turn_id, "session_id": rec.session_id,
        "score": rec.score, "text": rec.text, "source": rec.source, "created_at": rec.created_at,
    }
