"""Step rewards from recorded evidence: the evolver's checks as the trainer's StepCheck."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from molt.train_checks import EvidenceChecks, completion_calls
from store.database import Database
from store.feedback import FeedbackStore
from store.ids import new_id
from store.records import TurnRecord
from store.settings import StoreSettings
from store.trajectories import TrajectoryStore
from trainer.types import Step

TOOLS = [{"type": "function", "function": {
    "name": "reserve", "parameters": {"type": "object", "properties": {
        "day": {"type": "string"}, "seats": {"type": "integer"}}}}}]


def _call(cid: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "reserve", "arguments": json.dumps(args)}}


def _turn(idx: int, messages: list[dict[str, Any]], calls: list[dict[str, Any]]) -> TurnRecord:
    return TurnRecord(
        id=f"turn_{idx}", tenant_id="ten_a", session_id="ses_1", idx=idx, turn_type="main",
        created_at=time.time() + idx, request_model="m", stream=False,
        request={"model": "m", "messages": list(messages), "tools": TOOLS},
        tool_calls=calls or None,
    )


def _step(turn_id: str) -> Step:
    return Step(turn_id, "ses_1", "ten_a", 0, 0.0, "m", [], TOOLS, {})


async def test_a_tool_error_and_its_fix_score_candidate_calls(tmp_path: Path) -> None:
    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/m.db"))
    try:
        msgs: list[dict[str, Any]] = [{"role": "user", "content": "reserve 2 seats on 3 May"}]
        bad = _call("c1", {"day": "2026-05-03", "seats": 2})
        t0 = _turn(0, msgs, [bad])
        msgs += [{"role": "assistant", "content": None, "tool_calls": [bad]},
                 {"role": "tool", "tool_call_id": "c1",
                  "content": json.dumps({"error": "day must be DD.MM.YYYY, got 2026-05-03"})}]
        good = _call("c2", {"day": "03.05.2026", "seats": 2})
        t1 = _turn(1, msgs, [good])
        msgs += [{"role": "assistant", "content": None, "tool_calls": [good]},
                 {"role": "tool", "tool_call_id": "c2", "content": '{"ok": true}'}]
        t2 = _turn(2, msgs, [])
        await TrajectoryStore(db).write_turns([t0, t1, t2])
        checks = await EvidenceChecks.mine(TrajectoryStore(db), FeedbackStore(db), "ten_a")
        fixed = {"tool_calls": [_call("x", {"day": "03.05.2026", "seats": 2})]}
        again = {"tool_calls": [_call("x", {"day": "2026-05-03", "seats": 2})]}
        broke = {"tool_calls": [_call("x", {"day": "03.05.2026", "seats": 3})]}
        assert checks(_step("turn_0"), fixed) == 1.0
        assert checks(_step("turn_0"), again) == -1.0
        assert checks(_step("turn_0"), broke) == -1.0  # what the refused call had right stays
        assert checks(_step("turn_1"), fixed) == 1.0  # the turn that went well: the same call
        assert checks(_step("turn_1"), {"content": "done"}) == -1.0
        assert checks(_step(new_id("turn")), fixed) is None  # no evidence, no score
    finally:
        await db.close()


def test_completion_calls_reads_any_shape() -> None:
    msg = {"tool_calls": [_call("a", {"day": "x"}), {"function": {"name": "f", "arguments": "{bad"}},
                          "junk", {"function": "str"}]}
    assert completion_calls(msg) == [("reserve", {"day": "x"}), ("f", {})]
