"""The rl arms' pieces that need no training: when windows open, the upper-bound PRM, the report."""

from __future__ import annotations

import json

from bench.arms import ARMS
from bench.report import window_table
from bench.rl_arm import RLPlan, VerifierCheck, flagged
from bench.toolworld import generate_tasks
from tests.trainer.conftest import make_step


def test_one_window_after_the_first_half_of_the_days() -> None:
    assert RLPlan().windows_after([4, 5, 6, 7]) == {5}
    assert RLPlan().windows_after([4, 5, 6]) == {4}
    assert RLPlan().windows_after([4]) == set()
    assert {n for n, a in ARMS.items() if a.rl} == {"rl", "skills+rl", "rl-verifier-prm"}
    assert ARMS["rl-verifier-prm"].description.startswith("upper bound")
    assert ARMS["rl-verifier-prm"].rl.prm == "verifier"  # type: ignore[union-attr]


def test_verifier_check_scores_the_planned_call_and_a_wrong_one() -> None:
    task = next(t for t in generate_tasks(4, 12, 0) if t.plan)
    step = make_step(0)
    check = VerifierCheck({step.turn_id: task})
    first = task.plan[0]
    right = {"tool_calls": [{"function": {"name": first.name,
                                          "arguments": json.dumps(first.arguments)}}]}
    wrong = {"tool_calls": [{"function": {"name": "no_such_tool", "arguments": "{}"}}]}
    assert check(step, right) == 1.0
    assert check(step, wrong) == -1.0
    assert check(step, {"content": "done"}) == -1.0  # a final answer before the plan is done
    assert VerifierCheck({})(step, right) is None  # a turn of no known task: no score


def test_flagged_keeps_steps_with_a_fix_or_a_negative_reward() -> None:
    good, bad, fixed, silent = (make_step(i) for i in range(4))
    good.step_rewards, bad.step_rewards, silent.step_rewards = [0.5], [0.5, -1.0], [None]
    fixed.hindsight = {"role": "assistant", "content": "x"}
    assert [s.turn_id for s in flagged([good, bad, fixed, silent])] == ["turn_1", "turn_2"]


def test_report_labels_the_verifier_window_an_upper_bound() -> None:
    report = {"arms": {"rl-verifier-prm": {"windows": [
        {"after_day": 5, "prm": "verifier", "steps": 30, "mean_reward": 0.5, "kl": 0.2,
         "gate": {"status": "promoted", "heldout": {"reference": {"accuracy": 0.25},
                                                    "candidate": {"accuracy": 1.0}}}}]}}}
    table = "\n".join(window_table(report))
    assert "| rl-verifier-prm | 5 | verifier (upper bound) |" in table
    assert "promoted | 25.0% -> 100.0% |" in table
    assert window_table({"arms": {"baseline": {}}}) == []

