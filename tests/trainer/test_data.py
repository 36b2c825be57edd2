"""Query data from a real SQLite store: generations, evolution provenance, held-out, export."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from store.database import Database
from store.evolution import EvolutionStore, Proposal
from store.ids import new_id
from store.records import TurnRecord
from store.settings import StoreSettings
from store.skills.revisions import RevisionStore
from store.trajectories import TrajectoryStore
from tests.trainer.conftest import POLICY, WEATHER, call, make_step
from trainer.data import (
    DataConfig,
    is_heldout,
    load_split,
    read_jsonl,
    to_dataset,
    with_signal,
    write_jsonl,
)

T0 = time.time()


def _turn(session: str, idx: int, gen: int | None, *, tenant: str = "ten_a", kind: str = "main",
          status: str = "ok", calls: bool = True, version: str | None = "v0002") -> TurnRecord:
    messages = [{"role": "user", "content": f"weather for {session}?"}]
    return TurnRecord(
        id=new_id("turn"), tenant_id=tenant, session_id=session, idx=idx, turn_type=kind,
        created_at=T0 + idx + len(session), request_model="tiny", stream=False,
        request={"model": "tiny", "messages": messages, "tools": [WEATHER]},
        upstream_request={"model": "tiny", "tools": [WEATHER], "messages": [
            {"role": "system", "content": "<molt-skills>\n## w\nuse get_weather\n</molt-skills>"},
            *messages]},
        injected_skills=[{"id": "w", "revision": "srev_1", "hash": "ab", "tokens": 6},
                         {"id": "old-record"}],
        status=status, skill_generation=gen, weight_version=version,
        tool_calls=[call("get_weather", '{"city": "Oslo"}', f"call_{session}_{idx}")] if calls else None,
        content=None if calls else "It is sunny.",
    )


async def _bump(db: Database, tenant: str) -> None:
    await RevisionStore(db).record(tenant, "w", action="add", status="active", content="x",
                                   author="evolver", reason=None, provenance=None,
                                   serving_change=True)


async def _fill(db: Database) -> dict[str, Any]:
    ts = TrajectoryStore(db)
    old = [_turn("old_1", 0, 0, version="v0001"), _turn("old_1", 1, 0, calls=False, version="v0001"),
           _turn("old_2", 0, 0, version="v0001")]
    await ts.write_turns(old)
    await _bump(db, "ten_a")
    current = [_turn(f"ses_{i}", 0, 1) for i in range(12)]
    excluded = {
        "side": _turn("ses_side", 0, 1, kind="side"),
        "replay": _turn("ses_replay", 0, 1, kind="replay"),
        "error": _turn("ses_err", 0, 1, status="upstream_error"),
        "other_tenant": _turn("ses_x", 0, 1, tenant="ten_b"),
        "provenance": _turn("ses_used", 0, 1),
    }
    await ts.write_turns(current + list(excluded.values()))
    await EvolutionStore(db).add_proposal(Proposal(
        id=new_id("prop"), tenant_id="ten_a", evolution_id=None, created_at=time.time(),
        source="miner", status="accepted", ops=[], reason=None,
        provenance=[excluded["provenance"].id], scores=None, revisions=None))
    return {"old": old, "current": current, "excluded": excluded}


async def test_split_keeps_current_generation_query_turns_only(sqlite_db: Database) -> None:
    made = await _fill(sqlite_db)
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.25, seed=3))
    query = {s.turn_id for s in split.train + split.heldout}
    assert query == {t.id for t in made["current"]}
    assert not query & {t.id for t in made["excluded"].values()}
    assert {s.turn_id for s in split.retention} == {t.id for t in made["old"]}
    assert {s.weight_version for s in split.retention} == {"v0001"}
    assert all(s.skill_generation == 1 and s.weight_version == "v0002" for s in split.train)
    # the agent's own messages; the served ones (with skills) kept for the teacher
    s0 = split.train[0]
    assert [m["role"] for m in s0.messages] == ["user"]
    assert s0.served_messages is not None and s0.served_messages[0]["role"] == "system"
    # the skills injected into it, with the proxy's token estimate where recorded
    assert (s0.injected_skills, s0.skill_tokens) == (["w", "old-record"], {"w": 6})
    assert s0.completion["tool_calls"][0]["function"]["name"] == "get_weather"
    # held out: whole sessions, by hash, the same on every load
    assert split.heldout and split.train
    assert {s.session_id for s in split.heldout} == {
        f"ses_{i}" for i in range(12) if is_heldout(f"ses_{i}", 0.25, 3)}
    again = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.25, seed=3))
    assert [s.turn_id for s in again.heldout] == [s.turn_id for s in split.heldout]
    assert [s.turn_id for s in again.retention] == [s.turn_id for s in split.retention]


async def test_the_same_traffic_holds_out_the_same_sessions_in_another_store(tmp_path: Path) -> None:
    """The split goes by the agent's own session id (X-Session-Id) when it sent one: the same
    traffic recorded into two stores (molt minting other session ids) holds out the same
    sessions; a session without an agent id goes by molt's id."""
    picked = []
    for run in ("a", "b"):
        db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{tmp_path / run}.db"))
        try:
            turns = [dataclasses.replace(_turn(f"ses_{run}{i}", 0, None), session_external_id=f"agent-{i}")
                     for i in range(40)]
            await TrajectoryStore(db).write_turns(turns)
            split = await load_split(db, "ten_a", DataConfig(heldout_fraction=0.25, seed=3))
        finally:
            await db.close()
        held = sorted(s.session_id.removeprefix(f"ses_{run}") for s in split.heldout)
        assert held == sorted(str(i) for i in range(40) if is_heldout(f"agent-{i}", 0.25, 3))
        picked.append(held)
    assert picked[0] == picked[1] and 0 < len(picked[0]) < 40


async def test_retention_is_a_seeded_sample(sqlite_db: Database) -> None:
    await _fill(sqlite_db)
    a = await load_split(sqlite_db, "ten_a", DataConfig(retention_size=2, seed=1))
    b = await load_split(sqlite_db, "ten_a", DataConfig(retention_size=2, seed=1))
    assert len(a.retention) == 2
    assert [s.turn_id for s in a.retention] == [s.turn_id for s in b.retention]


async def test_unstamped_turns_count_while_skills_were_never_served(sqlite_db: Database) -> None:
    ts = TrajectoryStore(sqlite_db)
    await ts.write_turns([_turn("ses_a", 0, None)])
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    assert len(split.train) == 1
    await _bump(sqlite_db, "ten_a")
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    assert (split.train, len(split.retention)) == ([], 1)


def test_heldout_is_deterministic_and_near_its_fraction() -> None:
    ids = [f"ses_{i}" for i in range(2000)]
    picked = [s for s in ids if is_heldout(s, 0.2, 0)]
    assert picked == [s for s in ids if is_heldout(s, 0.2, 0)]
    assert 300 < len(picked) < 500
    assert picked != [s for s in ids if is_heldout(s, 0.2, 1)]


async def test_dataset_export_is_what_trl_renders_as_served(sqlite_db: Database,
                                                             tmp_path: Path) -> None:
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from modeling.chat import render_text

    await _fill(sqlite_db)
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    ds = to_dataset(split.train)
    assert len(ds) == len(split.train)
    row = ds[0]
    assert is_conversational(row)
    tok = AutoTokenizer.from_pretrained(str(POLICY))
    tools = json.loads(row["tools"])
    rendered = apply_chat_template({"prompt": row["prompt"]}, tok, tools=tools)["prompt"]
    assert rendered == render_text(tok, split.train[0].messages, split.train[0].tools)
    assert {"turn_id", "weight_version", "reward", "rewards", "step_rewards"} <= set(ds.column_names)
    assert row["weight_version"] == "v0002"
    path = tmp_path / "train.jsonl"
    assert write_jsonl(split.train, path) == len(split.train)
    assert read_jsonl(path) == split.train


def test_with_signal_keeps_steps_with_a_fix_or_a_negative_reward() -> None:
    good, bad, fixed, silent = (make_step(i, skills=False) for i in range(4))
    served = make_step(4)  # served with a skills block
    good.step_rewards, bad.step_rewards, silent.step_rewards = [0.5], [0.5, -1.0], [None]
    fixed.hindsight = {"role": "assistant", "content": "x"}
    served.step_rewards = [1.0]
    steps = [good, bad, fixed, silent, served]
    assert [s.turn_id for s in with_signal(steps)] == ["turn_1", "turn_2"]
    # distillation also learns from what was served with skills
    assert [s.turn_id for s in with_signal(steps, served_skills=True)] == [
        "turn_1", "turn_2", "turn_4"]
