"""Step rewards: recorded evidence from a real stored conversation, the learned PRM, the
judge's rows, the evolver-style StepCheck, and the distillation term."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from modeling.loading import load_base
from store.database import Database
from store.feedback import FeedbackStore
from store.ids import new_id
from store.records import TurnRecord
from store.trajectories import TrajectoryStore
from tests.trainer.conftest import POLICY, WEATHER, call, make_step
from trainer.advantages import message_steps, parse_completion
from trainer.data import DataConfig, load_split
from trainer.distill import completion_logprobs, distill_advantages
from trainer.errors import NotEnoughData
from trainer.evidence import is_error_result, tool_results
from trainer.prm import LearnedPRM, fit_or_none
from trainer.rewards import RewardWeights, StepRewards, combine, fill_rewards, source_agreement
from trainer.types import Step


@pytest.mark.parametrize("content", [
    '{"error": "city not found"}', {"error": {"code": 3, "message": "bad"}},
    '{"isError": true, "content": []}', '{"status": 404, "detail": "no"}',
    '{"statusCode": 500}', "Error: timeout", "  exception in handler", "Traceback (most recent",
    "HTTP/1.1 503 Service Unavailable", [{"type": "text", "text": "ERROR bad input"}],
])
def test_tool_errors_in_real_formats(content: Any) -> None:
    assert is_error_result(content)


@pytest.mark.parametrize("content", [
    '{"temp": 12, "error": null}', '{"status": 200}', "sunny, 12 C", "no errors found",
    '{"code": "E42"}', "", None, "HTTP/1.1 200 OK",
])
def test_tool_results_that_are_not_errors(content: Any) -> None:
    assert not is_error_result(content)


def test_anthropic_tool_result_blocks() -> None:
    msgs = [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "tu_1", "is_error": True, "content": "x"},
        {"type": "tool_result", "tool_use_id": "tu_2", "content": [{"type": "text", "text": "ok"}]},
    ]}]
    assert tool_results(msgs) == {"tu_1": True, "tu_2": False}


def _rec(sid: str, idx: int, messages: list[dict[str, Any]], **kw: Any) -> TurnRecord:
    return TurnRecord(
        id=new_id("turn"), tenant_id="ten_a", session_id=sid, idx=idx, turn_type="main",
        created_at=time.time() + idx, request_model="tiny", stream=False,
        request={"model": "tiny", "messages": messages, "tools": [WEATHER]}, skill_generation=0,
        weight_version="v0001", **kw)


async def _conversation(db: Database) -> list[TurnRecord]:
    """An agent asks for two cities; one call fails; the reply is judged; the user complains."""
    user = {"role": "user", "content": "Weather in Oslo and Atlantis?"}
    calls = [call("get_weather", '{"city": "Oslo"}', "call_a"),
             call("get_weather", '{"city": "Atlantis"}', "call_b")]
    t0 = _rec("ses_1", 0, [user], tool_calls=calls)
    after_tools = [user, {"role": "assistant", "content": None, "tool_calls": calls},
                   {"role": "tool", "tool_call_id": "call_a", "content": "sunny, 12 C"},
                   {"role": "tool", "tool_call_id": "call_b",
                    "content": json.dumps({"error": {"message": "unknown city"}})}]
    t1 = _rec("ses_1", 1, after_tools, content="Oslo is sunny; Atlantis is sunny too.")
    t2 = _rec("ses_1", 2, [*after_tools, {"role": "assistant", "content": t1.content},
                           {"role": "user", "content": "That is wrong about Atlantis."}],
              content="Sorry.")
    await TrajectoryStore(db).write_turns([t0, t1, t2])
    fb = FeedbackStore(db)
    await fb.add(tenant_id="ten_a", session_id="ses_1", turn_id=t1.id, score=-1.0, text="wrong",
                 source="user")
    await fb.add(tenant_id="ten_a", session_id="ses_1", turn_id=t1.id, score=-1.0, text=None,
                 source="judge")
    await fb.add(tenant_id="ten_a", session_id="ses_1", turn_id=t0.id, score=1.0, text=None,
                 source="verifier")
    return [t0, t1, t2]


async def test_evidence_from_a_recorded_conversation_with_a_tool_error(sqlite_db: Database) -> None:
    t0, t1, t2 = await _conversation(sqlite_db)
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    by_id = {s.turn_id: s for s in split.train}
    first = by_id[t0.id]
    # two steps: the call that ran (+0.5) and the call whose result is an error (-1);
    # the verifier's row is kept as a source but weighs nothing by default
    assert first.step_scores == [{"evidence": 0.5, "verifier": 1.0},
                                 {"evidence": -1.0, "verifier": 1.0}]
    assert first.step_rewards == [0.5, -1.0]
    assert first.reward == pytest.approx(-0.25)
    assert first.weight_version == "v0001"
    reply = by_id[t1.id]
    assert reply.step_scores == [{"evidence": -1.0, "judge": -1.0}]
    assert reply.step_rewards == [-1.0]
    assert reply.rewards == {"evidence": -1.0, "judge": -1.0}
    assert by_id[t2.id].step_rewards == [None] and by_id[t2.id].reward is None
    upper = RewardWeights(verifier=1.0)
    assert combine(first.step_scores[1], upper) == pytest.approx(0.0)


def _sampled(calls: list[tuple[str, str]]) -> str:
    return "".join(f'<tool_call>{{"name": "{n}", "arguments": {a}}}</tool_call>' for n, a in calls)


async def test_rollout_rewards_reuse_matching_evidence_and_ask_the_check(sqlite_db: Database) -> None:
    t0, _, _ = await _conversation(sqlite_db)
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    step = next(s for s in split.train if s.turn_id == t0.id)
    seen: list[Mapping[str, Any]] = []

    def check(s: Step, completion: Mapping[str, Any]) -> float | None:
        seen.append(completion)
        names = [c["function"]["name"] for c in completion.get("tool_calls") or []]
        return None if not names else (1.0 if all(n == "get_weather" for n in names) else -1.0)

    rewards = StepRewards(checks={"evidence": check})
    same = parse_completion(_sampled([("get_weather", '{"city": "Oslo"}'),
                                      ("get_weather", '{"city": "Atlantis"}')]))
    assert rewards(step, same) == [pytest.approx(0.75), pytest.approx(0.0)]
    other = parse_completion(_sampled([("get_time", '{"city": "Oslo"}')]))
    assert rewards(step, other) == [-1.0]
    assert rewards(step, parse_completion("I do not know.")) == [None]
    assert seen[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    with pytest.raises(ValueError, match="source"):
        StepRewards(checks={"oracle": check})


def _labelled(i: int, good: bool) -> Step:
    step = make_step(i)
    args = '{"city": "Oslo"}' if good else '{"town": 3}'
    step.completion = {"role": "assistant", "content": None,
                       "tool_calls": [call("get_weather", args)]}
    return fill_rewards(step, [{"evidence": 0.5 if good else -1.0}], RewardWeights())


def test_learned_prm_fits_evidence_labels_and_scores_new_samples(tmp_path: Path) -> None:
    base = load_base(POLICY)
    steps = [_labelled(i, good=i % 2 == 0) for i in range(12)]
    prm = LearnedPRM(base)
    report = prm.fit(steps)
    assert (report.examples, report.positives, report.negatives) == (12, 6, 6)
    assert report.train_accuracy >= 0.9
    probe = make_step(99)
    good = prm.score(probe, parse_completion(_sampled([("get_weather", '{"city": "Oslo"}')])))
    bad = prm.score(probe, parse_completion(_sampled([("get_weather", '{"town": 3}')])))
    assert len(good) == len(bad) == 1
    assert -1.0 <= bad[0] < good[0] <= 1.0  # type: ignore[operator]
    again = LearnedPRM.load(base, prm.save(tmp_path / "prm", report))
    assert again.score(probe, message_steps(steps[0].completion)) == pytest.approx(
        prm.score(probe, message_steps(steps[0].completion)))
    with_prm = StepRewards(prm=prm)
    assert with_prm(probe, parse_completion("no call")) != [None]
    with pytest.raises(NotEnoughData, match="good and bad"):
        LearnedPRM(base).fit(steps[::2])
    assert fit_or_none(base, steps[::2]) == (None, None)


def test_distillation_term_is_teacher_minus_student_per_token() -> None:
    base = load_base(POLICY)
    tok = base.tokenizer
    from modeling.chat import render_prompt

    step = make_step(1)
    assert step.served_messages is not None
    student_prompt = render_prompt(tok, step.messages, step.tools)
    teacher_prompt = render_prompt(tok, step.served_messages, step.tools)
    comp = tok(_sampled([("get_weather", '{"city": "x"}')]), add_special_tokens=False)["input_ids"]
    s, t = completion_logprobs(base.model, [student_prompt, teacher_prompt], [comp, comp],
                               pad_id=int(tok.pad_token_id), device=base.device)
    # the batched values equal one unbatched forward pass
    x = torch.tensor([teacher_prompt + comp])
    with torch.no_grad():
        logp = torch.log_softmax(base.model(input_ids=x).logits[0, :-1].float(), -1)
    manual = logp[torch.arange(len(teacher_prompt) - 1, len(teacher_prompt) + len(comp) - 1),
                  torch.tensor(comp)]
    assert torch.allclose(t, manual, atol=1e-4)
    (term,) = distill_advantages([t], [s], coef=0.5, clip=1.0)
    assert torch.allclose(term, 0.5 * (t - s).clamp(-1.0, 1.0))
    assert term.shape == (len(comp),)


async def test_agreement_of_each_source_with_the_verifier(sqlite_db: Database) -> None:
    await _conversation(sqlite_db)
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    # turn 0: evidence +0.5 and -1 against the verifier's +1 on both steps
    assert source_agreement(split.train) == {"evidence": {"steps": 2, "agreement": 0.5}}


async def test_a_failed_next_turn_still_carries_the_tool_error(sqlite_db: Database) -> None:
    user = {"role": "user", "content": "Weather in Atlantis?"}
    calls = [call("get_weather", '{"city": "Atlantis"}', "call_z")]
    t0 = _rec("ses_2", 0, [user], tool_calls=calls)
    t1 = _rec("ses_2", 1, [user, {"role": "assistant", "content": None, "tool_calls": calls},
                           {"role": "tool", "tool_call_id": "call_z", "content": "Error: no such city"}],
              status="upstream_error")
    await TrajectoryStore(sqlite_db).write_turns([t0, t1])
    split = await load_split(sqlite_db, "ten_a", DataConfig(heldout_fraction=0.0))
    assert [(s.turn_id, s.step_rewards) for s in split.train] == [(t0.id, [-1.0])]
