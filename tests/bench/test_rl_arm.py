"""The rl arms' pieces that need no training: when windows open, the upper-bound PRM, the report."""

from __future__ import annotations

import json
from pathlib import Path

from bench.arms import ARMS
from bench.report import window_table
from bench.rl_arm import RLPlan, VerifierCheck
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


def test_report_labels_the_verifier_window_an_upper_bound() -> None:
    report = {"arms": {"rl-verifier-prm": {"windows": [
        {"after_day": 5, "prm": "verifier", "steps": 30, "mean_reward": 0.5, "kl": 0.2,
         "gate": {"status": "promoted", "heldout": {"reference": {"accuracy": 0.25},
                                                    "candidate": {"accuracy": 1.0}}}}]}}}
    table = "\n".join(window_table(report))
    assert "| rl-verifier-prm | 5 | verifier (upper bound) |" in table
    assert "promoted | 25.0% -> 100.0% |" in table
    assert window_table({"arms": {"baseline": {}}}) == []



def test_the_rl_job_arm_runs_molts_own_job_on_the_defaults_the_rl_arm_measured() -> None:
    from bench.runner import molt_settings
    from molt.config import load_settings
    from trainer.rl_config import RLConfig

    arm = ARMS["rl-job"]
    assert arm.job is not None and arm.rl is None
    assert arm.job.windows_after([3, 4, 5, 6]) == {4}
    settings = load_settings(None, molt_settings(arm, Path("/tmp/x"), Path("/tmp/ckpt")))
    assert settings.trainer.rl == {} and settings.trainer.method == "lora_rl"
    assert not settings.skills.enabled and not settings.evolver.enabled
    # what a user's `molt train now` trains with is the window the rl arm measured
    defaults = RLConfig()
    for key, value in RLPlan().rl.items():
        if key not in ("max_completion_length", "save_steps", "kl_samples"):  # size and logging
            assert getattr(defaults, key) == value, key
    assert defaults.focus and RLPlan().focus


def test_the_report_lists_a_job_window_with_the_rl_windows() -> None:
    window = {"after_day": 4, "kind": "lora-job", "prm": "evidence (molt's job, defaults)",
              "steps_trained_on": 9, "steps": 60, "mean_reward": 0.7, "kl": 0.5,
              "window_cpu_min": 2.0, "window_wall_min": 2.1,
              "gate": {"status": "promoted", "heldout": {"reference": {"accuracy": 0.5},
                                                         "candidate": {"accuracy": 1.0}}}}
    table = "\n".join(window_table({"arms": {"rl-job": {"windows": [window]}}}))
    assert ("| rl-job | 4 | evidence (molt's job, defaults) | 9 | 60 | 0.700 | 0.5000 | - | "
            "2.0 (2.1) | promoted | 50.0% -> 100.0% |") in table
