"""`previous_response_id`: the conversation a follow-up continues, from molt's own record.

A Response `resp_<hex>` is the turn `turn_<hex>`. Its recorded request (the
chat body molt built, before skills or context were injected) holds the whole
conversation up to it, so the follow-up's history is that request's messages
from `followup_from` on (the instructions are not carried, as OpenAI does)
plus the answer. Nothing is chained: one turn is read, whatever the depth.

Where the turn is looked up:
1. `RecentResponses`, this process's last answers: the recorder writes in
   batches, and an agent sends its follow-up as soon as it has run the tool;
2. the store (`store.followups`), for older turns and other replicas.
Both are per tenant: another tenant's id is "not found", like an unknown one.

Errors, in OpenAI's envelope: 404 `previous_response_not_found`; 400 when the
response failed or is still streaming (it has no answer to continue).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.errors import InvalidRequest, NotFoundError
from proxy.responses.output import answer_calls
from proxy.responses.output import turn_id as turn_of
from proxy.sessions import recorded_answer
from store.chat_shapes import answer_message
from store.database import Database
from store.followups import find_followup_turn
from store.records import TurnRecord

JSON = dict[str, Any]
RECENT_CAPACITY = 256
RECENT_TTL_S = 300.0
_PARAM = "previous_response_id"


@dataclass(frozen=True, slots=True)
class Continued:
    """A previous turn as a follow-up sees it; `answer` is False while it still streams."""

    status: str
    request: JSON
    followup_from: int
    answer: Mapping[str, Any] | None | bool


def history_message(answer: Mapping[str, Any], response_id: str) -> JSON:
    """An assistant answer as a request message: role, content, refusal and tool calls only.

    The calls carry the ids the Response showed (`output.answer_calls`)."""
    msg: JSON = {"role": "assistant", "content": answer.get("content")}
    calls = answer_calls(response_id, answer)
    if calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}}
                             for c in calls]
    elif msg["content"] is None:
        msg["content"] = ""
    if isinstance(answer.get("refusal"), str):
        msg["refusal"] = answer["refusal"]
    return msg


def conversation(prev: Continued, response_id: str) -> list[JSON]:
    """The messages a follow-up of `prev` starts with; 400 when there is nothing to continue."""
    if prev.status != "ok":
        raise InvalidRequest(f"Previous response with id '{response_id}' did not complete "
                             f"({prev.status}); it cannot be continued", param=_PARAM,
                             code="previous_response_failed")
    if prev.answer is False:
        raise InvalidRequest(f"Previous response with id '{response_id}' is still in progress",
                             param=_PARAM, code="previous_response_in_progress")
    messages = prev.request.get("messages")
    carried = list(messages[prev.followup_from:]) if isinstance(messages, list) else []
    if isinstance(prev.answer, Mapping):
        carried.append(history_message(prev.answer, response_id))
    return carried


class RecentResponses:
    """This process's latest continuable turns, by turn id, until the store surely has them."""

    def __init__(self, capacity: int = RECENT_CAPACITY, ttl_s: float = RECENT_TTL_S) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._turns: OrderedDict[str, tuple[float, TurnRecord]] = OrderedDict()

    def remember(self, rec: TurnRecord) -> None:
        if rec.followup_from is None:
            return
        self._turns[rec.id] = (time.monotonic(), rec)
        while len(self._turns) > self.capacity:
            self._turns.popitem(last=False)

    def get(self, tenant_id: str, turn_id: str) -> Continued | None:
        entry = self._turns.get(turn_id)
        if entry is None:
            return None
        at, rec = entry
        if time.monotonic() - at > self.ttl_s:
            del self._turns[turn_id]
            return None
        if rec.tenant_id != tenant_id or rec.followup_from is None:
            return None
        answer: Mapping[str, Any] | None | bool
        if rec.http_status is None:  # still with the upstream (a stream's answer is in its chunks)
            answer = recorded_answer(rec) if rec.stream and rec.stream_chunks is not None else False
        else:
            answer = recorded_answer(rec) if rec.stream else answer_message(rec.response)
        return Continued(rec.status, rec.request, rec.followup_from, answer)


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Previous response with id '{response_id}' not found.", param=_PARAM,
                         code="previous_response_not_found")


async def resolve(response_id: str, tenant_id: str, recent: RecentResponses, db: Database) -> list[JSON]:
    """The conversation `response_id` continues, for `tenant_id`; 404 when it is not the tenant's."""
    turn = turn_of(response_id)
    if turn is None:
        raise _not_found(response_id)
    prev = recent.get(tenant_id, turn)
    if prev is None:
        stored = await find_followup_turn(db, tenant_id, turn)
        if stored is None:
            raise _not_found(response_id)
        prev = Continued(stored.status, stored.request, stored.followup_from,
                         answer_message(stored.response))
    return conversation(prev, response_id)
