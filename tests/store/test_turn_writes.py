"""Writing turns: any upstream JSON shape is read without raising and stored on both stores;
writes are idempotent and a client's session id is one session whoever created it first."""

from __future__ import annotations

import json
import time
from typing import Any

from proxy.sse_assembly import finalize_turn
from store.database import Database
from store.ids import new_id
from store.normalize import session_key
from store.records import TurnRecord, turn_from_json, turn_to_json
from store.trajectories import TrajectoryStore

ODD = [None, 5, -1, 10**30, 1e300, float("inf"), float("nan"), True, "s", "a\x00b", "\ud800",
       [], {}, [None], [5], ["x"], {"a": 1}, [{"index": -3}], [{"index": 10**9}]]


def _turn(session: str = "ses_x", **kw: Any) -> TurnRecord:
    fields: dict[str, Any] = {"stream": False, **kw}
    return TurnRecord(id=new_id("turn"), tenant_id="ten_a", session_id=session, idx=0,
                      turn_type="main", created_at=time.time(), request_model="m",
                      request={"model": "m", "messages": []}, **fields)


def _responses() -> list[Any]:
    shapes: list[Any] = []
    for v in ODD:
        shapes += [
            {"choices": v}, {"choices": [v]}, {"choices": [{"message": v}]},
            {"choices": [{"message": {"content": v, "tool_calls": v, "reasoning_content": v}}]},
            {"choices": [{"finish_reason": v, "message": {"content": "ok"}}]},
            {"usage": v}, {"usage": {"prompt_tokens": v, "completion_tokens": v}}, {"model": v},
        ]
    return shapes


def _chunks(v: Any) -> list[dict[str, Any]]:
    return [
        {"choices": v}, {"choices": [v]}, {"choices": [{"index": v, "delta": {"content": "a"}}]},
        {"choices": [{"index": 0, "delta": v}]},
        {"choices": [{"index": 0, "delta": {"content": v, "role": v, "refusal": v}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": v}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [v]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": v, "id": v, "type": v,
                                                             "function": v}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"name": v,
                                                                         "arguments": v}}]}}]},
        {"choices": [{"index": 0, "logprobs": v}]},
        {"choices": [{"index": 0, "logprobs": {"content": v}}]},
        {"usage": v, "model": v, "id": v}, {"error": v},
    ]


async def test_finalize_turn_is_total_and_every_shape_is_stored(db: Database) -> None:
    batch: list[TurnRecord] = []
    for resp in _responses():
        rec = _turn(response_bytes=json.dumps(resp).encode())
        finalize_turn(rec)
        batch.append(rec)
    for v in ODD:
        chunks = [f"data: {json.dumps(c)}\n\n".encode() for c in _chunks(v)]
        rec = _turn(stream=True, stream_chunks=[*chunks, b"data: [DONE]\n\n"])
        finalize_turn(rec)
        batch.append(rec)
    for raw in (b"not json", b"[1, 2]", b"5", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000):
        rec = _turn(response_bytes=raw)
        finalize_turn(rec)
        assert rec.response is not None and "unparsed" in rec.response
        batch.append(rec)
    ts = TrajectoryStore(db)
    assert await ts.write_turns(batch) == len(batch)
    assert (await ts.get_session("ses_x")).summary.turns == len(batch)


async def test_writes_are_idempotent(db: Database) -> None:
    ts = TrajectoryStore(db)
    batch = [_turn("ses_1"), _turn("ses_1"), _turn("ses_2")]
    copies = [turn_from_json(json.loads(json.dumps(turn_to_json(r)))) for r in batch]
    assert await ts.write_turns(batch) == 3
    assert await ts.write_turns(copies) == 0  # a spool replay of turns already written
    counts = {s.id: s.turns for s in await ts.list_sessions()}
    assert counts == {"ses_1": 2, "ses_2": 1}


async def test_a_client_session_id_is_one_session_whoever_wrote_first(db: Database) -> None:
    ts = TrajectoryStore(db)
    # Two processes each opened their own session for the same X-Session-Id.
    first = [_turn("ses_a", session_external_id="run-1")]
    second = [_turn("ses_b", session_external_id="run-1"), _turn("ses_b", session_external_id="run-1")]
    assert await ts.write_turns(first) == 1
    assert await ts.write_turns(second) == 2
    sessions = await ts.list_sessions()
    assert [(s.id, s.external_id, s.turns) for s in sessions] == [("ses_a", "run-1", 3)]
    assert await ts.find_by_external_id("ten_a", "run-1") == ("ses_a", 3)
    detail = await ts.get_session("ses_a")
    assert {t["id"] for t in detail.turns} == {r.id for r in first + second}


async def test_long_client_session_ids_stay_distinct(db: Database) -> None:
    ts = TrajectoryStore(db)
    ids = ["x" * 300 + "1", "x" * 300 + "2"]
    assert session_key(ids[0]) != session_key(ids[1])
    assert all(len(session_key(i)) == 256 for i in ids)
    for n, ext in enumerate(ids):
        await ts.write_turns([_turn(f"ses_{n}", session_external_id=ext)])
    for n, ext in enumerate(ids):
        assert await ts.find_by_external_id("ten_a", ext) == (f"ses_{n}", 1)

