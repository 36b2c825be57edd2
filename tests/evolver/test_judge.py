"""The PRM judge, with the scripted fake LLM as its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evolver.judge import Judge, majority, parse_score
from evolver.llm import OpenAICompatModel
from store.database import Database
from store.feedback import FeedbackStore
from store.settings import StoreSettings
from tests.fakes.fake_llm import FakeLLM, Reply


def test_parse_and_majority() -> None:
    assert parse_score("Score: +1 because the call worked") == 1
    assert parse_score("score = -1") == -1
    assert parse_score("no idea") is None
    assert majority([1, -1, -1]) == -1
    assert majority([1, -1, None]) == 0
    assert majority([None, None]) == 0


def _turn(i: int, content: str | None) -> dict[str, Any]:
    return {"id": f"turn_{i}", "session_id": "ses_1", "tenant_id": "t", "idx": i, "turn_type": "main",
            "status": "ok", "content": content, "tool_calls": None,
            "request": {"messages": [{"role": "user", "content": f"question {i}"}]}}


async def test_judge_scores_with_votes_and_caches(tmp_path: Path, fake_llm: FakeLLM) -> None:
    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path}/j.db"))
    fb = FeedbackStore(db)
    model = OpenAICompatModel(fake_llm.url + "/v1", "judge-model")  # type: ignore[attr-defined]
    fake_llm.push(Reply(content="Score: -1 wrong"), Reply(content="Score: +1"), Reply(content="Score: -1 bad"),
                  Reply(content="Score: 1"), Reply(content="Score: 1"), Reply(content="Score: 0"))
    judge = Judge(model, fb, votes=3, temperature=0.6)
    turns = [_turn(0, "a"), _turn(1, "b"), _turn(2, "c")]
    assert await judge.judge_session(turns) == 2  # the last turn has no evidence yet
    rows = sorted(await fb.for_turns(["turn_0", "turn_1", "turn_2"]), key=lambda r: r["turn_id"])
    assert [(r["turn_id"], r["score"], r["source"]) for r in rows] == [
        ("turn_0", -1.0, "judge"), ("turn_1", 1.0, "judge")]
    assert rows[0]["meta"]["votes"] == [-1, 1, -1] and rows[0]["meta"]["cost"]["calls"] == 3
    assert fake_llm.requests[0]["temperature"] == 0.6
    assert "question 0" in fake_llm.requests[0]["messages"][1]["content"]
    assert await judge.judge_session(turns) == 0  # cached: nothing judged twice
    assert model.cost.calls == 6
    await model.aclose()
    await db.close()
