"""Hindsight fixes: the agent's own later fix of a refused call, recorded and used in RL."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from store.database import Database
from store.ids import new_id
from store.records import TurnRecord
from store.trajectories import TrajectoryStore
from tests.trainer.conftest import POLICY, WEATHER, call, make_step
from trainer.advantages import Completion, call_block
from trainer.data import DataConfig, load_split, to_dataset
from trainer.distill import completion_logprobs
from trainer.rl import build
from trainer.rl_config import RLConfig
from trainer.types import Split, Step

REFUSED = json.dumps({"error": {"message": "city must be upper case, got oslo"}})


def _rec(sid: str, idx: int, messages: list[dict[str, Any]], **kw: Any) -> TurnRecord:
    return TurnRecord(
        id=new_id("turn"), tenant_id="ten_a", session_id=sid, idx=idx, turn_type="main",
        created_at=time.time() + idx, request_model="tiny", stream=False,
        request={"model": "tiny", "messages": messages, "tools": [WEATHER]}, skill_generation=0,
        weight_version="base", **kw)


async def _session(db: Database, sid: str, *, retry_ok: bool) -> list[TurnRecord]:
    """A call refused, a retry of the same tool (that runs, or is refused again), a reply."""
    user = {"role": "user", "content": "Weather in Oslo?"}
    first = call("get_weather", '{"city": "oslo"}', f"{sid}_a")
    retry = call("get_weather", '{"city": "OSLO"}', f"{sid}_b")
    m1 = [user, {"role": "assistant", "content": None, "tool_calls": [first]},
          {"role": "tool", "tool_call_id": f"{sid}_a", "content": REFUSED}]
    m2 = [*m1, {"role": "assistant", "content": None, "tool_calls": [retry]},
          {"role": "tool", "tool_call_id": f"{sid}_b", "content": "sunny" if retry_ok else REFUSED}]
    turns = [_rec(sid, 0, [user], tool_calls=[first]), _rec(sid, 1, m1, tool_calls=[retry]),
             _rec(sid, 2, m2, content="It is sunny.")]
    await TrajectoryStore(db).write_turns(turns)
    return turns


async def test_a_refused_call_carries_the_agents_later_fix(sqlite_db: Database) -> None:
    fixed = await _session(sqlite_db, "ses_fixed", retry_ok=True)
    never = await _session(sqlite_db, "ses_never", retry_ok=False)
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    by_id = {s.turn_id: s for s in split.train}
    fix = by_id[fixed[0].id].hindsight
    assert fix is not None
    # the refused call's id, the retry's name and arguments
    assert fix["tool_calls"] == [{**call("get_weather", '{"city": "OSLO"}', "ses_fixed_a")}]
    # the retry itself ran, the reply made no call, the never-fixed call has no fix
    assert by_id[fixed[1].id].hindsight is None and by_id[fixed[2].id].hindsight is None
    assert by_id[never[0].id].hindsight is None and by_id[never[1].id].hindsight is None
    rows = to_dataset([by_id[fixed[0].id], by_id[never[0].id]])
    assert json.loads(rows[0]["hindsight_json"]) == fix and rows[1]["hindsight_json"] is None


def _fix_step(i: int) -> Step:
    s = make_step(i, skills=False)
    s.hindsight = {"role": "assistant", "content": None,
                   "tool_calls": [call("get_weather", '{"city": "Oslo"}')]}
    return s


def _is_fix(step: Step, completion: Completion) -> list[float | None]:
    calls = completion.message.get("tool_calls") or []
    ok = len(calls) == 1 and json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    return [1.0 if ok else -1.0] * len(completion.steps)


def _fix_logprob(model: Any, tok: Any, step: Step) -> float:
    from modeling.chat import render_prompt

    assert step.hindsight is not None
    prompt = render_prompt(tok, step.messages, step.tools)
    comp = tok(call_block(step.hindsight["tool_calls"][0]), add_special_tokens=False)["input_ids"]
    comp = [*comp, tok.eos_token_id]
    (lp,) = completion_logprobs(model, [prompt], [comp], pad_id=int(tok.pad_token_id),
                                device=torch.device("cpu"))
    return float(lp.sum())


def test_hindsight_fix_replaces_one_sample_per_group_and_is_learned(tmp_path: Path) -> None:
    cfg = RLConfig(max_steps=4, batch_size=8, num_generations=4, max_completion_length=24,
                   temperature=1.0, learning_rate=5e-3, kl_samples=1, hindsight=True)
    split = Split(train=[_fix_step(i) for i in range(4)])
    run = build(split, POLICY, tmp_path, cfg, _is_fix)
    model, tok = run.trainer.model, run.base.tokenizer
    before = _fix_logprob(model, tok, split.train[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        run.trainer.train()
    after = _fix_logprob(model, tok, split.train[0])
    rows = [r for r in run.trainer.state.log_history if "hindsight/share" in r]
    # one sample of each group of four is the fix, and every group has a signal
    assert [r["hindsight/share"] for r in rows] == [0.25] * 4
    assert all(r["step_rewards/skipped_groups"] == 0.0 for r in rows)
    assert after > before + 1.0


def test_without_the_option_no_sample_is_replaced(tmp_path: Path) -> None:
    cfg = RLConfig(max_steps=1, batch_size=8, num_generations=4, max_completion_length=24,
                   temperature=1.0, learning_rate=5e-3, kl_samples=1, hindsight=False)
    run = build(Split(train=[_fix_step(i) for i in range(2)]), POLICY, tmp_path, cfg, _is_fix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        run.trainer.train()
    assert not [r for r in run.trainer.state.log_history if "hindsight/share" in r]


def test_training_stops_once_the_reward_has_saturated(tmp_path: Path) -> None:
    from trainer.rl import train

    def always_right(step: Step, completion: Completion) -> list[float | None]:
        return [1.0] * len(completion.steps)

    cfg = RLConfig(max_steps=6, batch_size=4, num_generations=2, max_completion_length=16,
                   kl_samples=1, stop_at_reward=0.9, stop_patience=2)
    result = train(Split(train=[_fix_step(i) for i in range(2)]), POLICY, tmp_path, cfg,
                   always_right)
    assert (result.steps, result.stopped_early) == (2, False)
    assert result.adapter_dir is not None and (result.adapter_dir / "adapter_config.json").is_file()


# -- teacher samples: the answer served with skills, for distillation -----------------------


def _served_step(i: int, *, skills: bool = True, refused: bool = False) -> Step:
    s = make_step(i, skills=skills)
    s.completion = {"role": "assistant", "content": None,
                    "tool_calls": [call("get_weather", '{"city": "Oslo"}')]}
    s.step_rewards = [-1.0] if refused else [1.0]
    return s


def _served_logprob(model: Any, tok: Any, step: Step) -> float:
    step.hindsight = step.completion
    try:
        return _fix_logprob(model, tok, step)
    finally:
        step.hindsight = None


def test_a_served_answer_is_the_teachers_sample_and_is_learned(tmp_path: Path) -> None:
    cfg = RLConfig(max_steps=4, batch_size=8, num_generations=4, max_completion_length=24,
                   temperature=1.0, learning_rate=5e-3, kl_samples=1, teacher_samples=True)
    split = Split(train=[_served_step(i) for i in range(4)])
    run = build(split, POLICY, tmp_path, cfg, _is_fix)
    model, tok = run.trainer.model, run.base.tokenizer
    before = _served_logprob(model, tok, split.train[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        run.trainer.train()
    after = _served_logprob(model, tok, split.train[0])
    rows = [r for r in run.trainer.state.log_history if "teacher_samples/share" in r]
    assert [r["teacher_samples/share"] for r in rows] == [0.25] * 4
    assert after > before + 1.0


def test_no_teacher_sample_without_skills_served_or_for_a_refused_answer(tmp_path: Path) -> None:
    cfg = RLConfig(max_steps=1, batch_size=8, num_generations=4, max_completion_length=24,
                   temperature=1.0, learning_rate=5e-3, kl_samples=1, teacher_samples=True)
    split = Split(train=[_served_step(0, skills=False), _served_step(1, refused=True)])
    run = build(split, POLICY, tmp_path, cfg, _is_fix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        run.trainer.train()
    rows = [r for r in run.trainer.state.log_history if "teacher_samples/share" in r]
    assert [r["teacher_samples/share"] for r in rows] == [0.0]
