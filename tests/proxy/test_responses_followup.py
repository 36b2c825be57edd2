"""`previous_response_id` -> the conversation it continues (proxy/responses/followup.py)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.errors import InvalidRequest, NotFoundError
from proxy.responses.followup import Continued, RecentResponses, conversation, resolve
from proxy.responses.output import from_completion, response_id
from proxy.responses.request import parse_request
from store.database import Database
from store.ids import new_id
from store.records import TurnRecord
from store.settings import StoreSettings
from store.trajectories import TrajectoryStore

REQUEST = {"model": "m", "messages": [{"role": "system", "content": "Be terse."},
                                      {"role": "user", "content": "Weather in Oslo?"}]}
CALL = {"id": "call_0", "type": "function", "index": 0,
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
ANSWER = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
    "role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [CALL]}}]}
CARRIED = [{"role": "user", "content": "Weather in Oslo?"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "call_0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}]


def _rec(tenant: str = "ten_a", *, stream: bool = False, followup_from: int | None = 1,
         http_status: int | None = 200, **kw: Any) -> TurnRecord:
    return TurnRecord(id=new_id("turn"), tenant_id=tenant, session_id=new_id("ses"), idx=0,
                      turn_type="main", created_at=time.time(), request_model="m", stream=stream,
                      request=REQUEST, followup_from=followup_from, http_status=http_status, **kw)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/f.db"))
    yield database
    await database.close()


def test_a_recent_answer_still_with_the_upstream_is_in_progress() -> None:
    recent = RecentResponses()
    rec = _rec(http_status=None)
    recent.remember(rec)
    got = recent.get("ten_a", rec.id)
    assert got is not None and got.answer is False


def test_calls_without_an_id_carry_the_id_the_response_showed() -> None:
    answer = {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    rid = "resp_0191c2a0b1c2d3e4f5a6b7c8d9e0f1a2"
    shown = from_completion(rid, parse_request({"model": "m", "input": "x"}),
                            {"choices": [{"message": answer, "finish_reason": "tool_calls"}]})
    carried = conversation(Continued("ok", REQUEST, 2, answer), rid)
    assert carried[-1]["tool_calls"][0]["id"] == shown["output"][1]["call_id"] == f"call_{rid[5:]}_1"


def test_the_conversation_drops_the_instructions_and_adds_the_clean_answer() -> None:
    prev = Continued("ok", REQUEST, 1, ANSWER["choices"][0]["message"])  # type: ignore[index]
    assert conversation(prev, "resp_x") == CARRIED
    text = Continued("ok", REQUEST, 0, {"role": "assistant", "content": "Sunny."})
    assert conversation(text, "resp_x") == [*REQUEST["messages"], {"role": "assistant", "content": "Sunny."}]


def test_a_failed_or_streaming_response_cannot_be_continued() -> None:
    with pytest.raises(InvalidRequest, match="did not complete"):
        conversation(Continued("upstream_error", REQUEST, 0, None), "resp_x")
    with pytest.raises(InvalidRequest, match="still in progress"):
        conversation(Continued("ok", REQUEST, 0, False), "resp_x")


def test_recent_responses_are_per_tenant_and_bounded() -> None:
    recent = RecentResponses(capacity=2)
    a, b, c = _rec(response=ANSWER), _rec("ten_b", response=ANSWER), _rec(response=ANSWER)
    unstored = _rec(followup_from=None, response=ANSWER)
    for r in (a, b, c, unstored):
        recent.remember(r)
    assert recent.get("ten_a", a.id) is None  # evicted
    assert recent.get("ten_a", b.id) is None  # another tenant's
    got = recent.get("ten_a", c.id)
    assert got is not None and got.followup_from == 1 and got.answer == ANSWER["choices"][0]["message"]  # type: ignore[index]
    assert recent.get("ten_a", unstored.id) is None


def test_a_recent_stream_is_continued_from_its_chunks_once_it_ended() -> None:
    recent = RecentResponses()
    chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Sun"}}]}
    rec = _rec(stream=True, http_status=None,
               stream_chunks=[f"data: {json.dumps(chunk)}\n\n".encode()])
    recent.remember(rec)
    got = recent.get("ten_a", rec.id)
    assert got is not None and got.answer is False  # still streaming
    assert rec.stream_chunks is not None
    rec.stream_chunks.append(b"data: [DONE]\n\n")
    got = recent.get("ten_a", rec.id)
    assert got is not None and isinstance(got.answer, dict) and got.answer["content"] == "Sun"


async def test_resolve_reads_the_store_per_tenant(db: Database) -> None:
    rec = _rec(response=ANSWER)
    await TrajectoryStore(db).write_turns([rec])
    rid = response_id(rec.id)
    assert await resolve(rid, "ten_a", RecentResponses(), db) == CARRIED
    for tenant, asked in (("ten_b", rid), ("ten_a", response_id(new_id("turn"))),
                          ("ten_a", "resp_abc"), ("ten_a", rec.id)):
        with pytest.raises(NotFoundError) as err:
            await resolve(asked, tenant, RecentResponses(), db)
        env = err.value.envelope()["error"]
        assert err.value.status == 404
        assert (env["param"], env["code"]) == ("previous_response_id", "previous_response_not_found")
        assert env["message"] == f"Previous response with id '{asked}' not found."


async def test_resolve_finds_a_turn_the_recorder_has_not_written_yet(db: Database) -> None:
    recent = RecentResponses()
    rec = _rec(response=ANSWER)
    recent.remember(rec)
    assert await resolve(response_id(rec.id), "ten_a", recent, db) == CARRIED
    with pytest.raises(NotFoundError):
        await resolve(response_id(rec.id), "ten_b", recent, db)
