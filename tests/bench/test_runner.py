"""`molt bench run` as a user runs it: a fresh molt per arm, a report folder with figures and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import gap_recovered, markdown


def test_bench_run_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "molt", "bench", "run", "--days", "3,4", "--tasks-per-day", "2",
         "--arms", "baseline,oracle,skills", "--errors", "pydantic", "--complaint-rate", "0.6",
         "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| baseline |" in proc.stdout and "Gap recovered" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["days"] == [3, 4] and set(report["arms"]) == {"baseline", "oracle", "skills"}
    assert (report["errors"], report["complaint_rate"]) == ("pydantic", 0.6)
    for arm in report["arms"].values():
        assert arm["overall"]["episodes"] == 4 and arm["overall"]["errors"] == 0
        assert set(arm["per_day"]) == set(arm["per_day_late"]) == {"3", "4"}
        assert arm["per_day_late"]["4"]["episodes"] == 1  # the later half of the day's 2 episodes
        for episode in arm["episodes"]:
            assert 0.0 <= episode["step_accuracy"] <= 1.0
        assert arm["overall"]["skill_tokens"] >= 0 and "skill_tokens" in arm["per_day"]["4"]
    # no skills are served to the baseline: it pays no skill tokens
    assert report["arms"]["baseline"]["overall"]["skill_tokens"] == 0
    # the skills arm runs molt's own evolver loop on its default triggers, and says so
    skills = report["arms"]["skills"]
    assert skills["cadence"].startswith("evolver loop, default triggers")
    assert isinstance(skills["evolutions"], list)
    assert all(e["trigger"] in ("failures", "interval") for e in skills["evolutions"])
    for name in ("summary.md", "success.png", "step_accuracy.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "success.png").read_bytes()[:4] == b"\x89PNG"


def _report(baseline: float, oracle: float, skills: float, late: float | None = None) -> dict:
    def arm(value: float, late: float | None = None) -> dict:
        day = {"success": value, "step_accuracy": value, "affected_accuracy": None,
               "complaints": 0, "episodes": 4}
        return {"overall": day, "per_day": {"4": day},
                "per_day_late": {"4": {**day, "success": value if late is None else late}}}

    return {"days": [4], "tasks_per_day": 4, "seed": 0,
            "arms": {"baseline": arm(baseline), "oracle": arm(oracle), "skills": arm(skills, late)}}


def test_gap_recovered_is_the_share_of_the_baseline_oracle_gap() -> None:
    assert gap_recovered(_report(0.2, 0.8, 0.68), "skills", 4, "success") == pytest.approx(0.8)
    assert gap_recovered(_report(0.5, 0.5, 0.9), "skills", 4, "success") is None  # no gap
    assert gap_recovered(_report(0.2, 0.8, 0.5), "skills", 5, "success") is None  # no such day
    # the day's second half is reported beside the whole day
    assert gap_recovered(_report(0.2, 0.8, 0.5, late=0.8), "skills", 4, "success",
                         "per_day_late") == pytest.approx(1.0)
    table = markdown(_report(0.25, 0.75, 0.5, late=0.75))
    assert "| 4 | success | 50.0% | 100.0% |" in table


def test_the_report_shows_skill_tokens_per_day_and_what_a_window_internalized() -> None:
    report = _report(0.25, 0.75, 0.5)
    tested = {"name": "date-format", "steps": 6, "paired": 6, "candidate_with": 1.0,
              "candidate_without": 1.0, "reference_with": 1.0, "reference_without": 0.5,
              "internalized": True, "reason": "accuracy 1.000 with it, 1.000 without"}
    for name, tokens in (("baseline", 0.0), ("oracle", 0.0), ("skills", 61.6)):
        arm = report["arms"][name]
        arm["overall"] = {**arm["overall"], "skill_tokens": tokens}
        arm["per_day"]["4"] = {**arm["per_day"]["4"], "skill_tokens": tokens}
    report["arms"]["skills"]["windows"] = [{
        "after_day": 4, "prm": "evidence", "gate": {
            "status": "promoted", "internalized_skills": ["date-format"],
            "internalization": {"tested": [tested], "tokens_per_request": 26.7}}}]
    table = markdown(report)
    assert "| 4 (window after) | 25.0% / 0 | 75.0% / 0 | 50.0% / 62 |" in table
    assert "| promoted | - -> - | date-format (-27 tokens) |" in table
    assert ("| skills | 4 | date-format | 6 (6) | 100.0% -> 100.0% | 100.0% -> 50.0% | yes | "
            in table)


def test_after_a_window_the_report_splits_drifts_it_could_learn_from_later_ones() -> None:
    # a window after day 5 (date=dmy in force since day 4); day 6 adds reminder=15
    def day(by_drift: dict[str, list[int]]) -> dict:
        return {"step_accuracy": 0.5, "affected_accuracy": 0.5, "unaffected_accuracy": 1.0,
                "success": 0.5, "complaints": 0, "episodes": 4, "by_drift": by_drift}

    per_day = {"5": day({"date=dmy": [8, 4]}),
               "6": day({"date=dmy": [7, 7], "date=dmy+reminder=15": [1, 0], "reminder=15": [2, 0]}),
               "7": day({"date=dmy": [3, 2]})}
    arm = {"overall": per_day["5"], "per_day": per_day, "per_day_late": per_day,
           "windows": [{"after_day": 5, "prm": "evidence", "gate": {"status": "promoted"}}]}
    table = markdown({"days": [5, 6, 7], "tasks_per_day": 4, "seed": 0, "arms": {"rl": arm}})
    # in force at the window: 4/8 before -> 7/7 next day, 9/10 over days 6-7; later drifts 0/3
    assert "| 50.0% (8) -> 100.0% (7) | 90.0% (10) | 0.0% (3) |" in table
    assert "| 6 | date=dmy 7/7, date=dmy+reminder=15 0/1, reminder=15 0/2 |" in table


@pytest.mark.timeout(900)
def test_a_loop_arm_is_a_function_of_its_seed(tmp_path: Path) -> None:
    """Two runs of the skills arm see the same evolutions after the same episodes and play the
    same calls: the loop is paced by the runner's ticks only, not by a wall-clock poll that
    fires at load-dependent moments (which made two arms diverge before any difference)."""
    def run(name: str) -> dict:
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "molt", "bench", "run", "--days", "4", "--tasks-per-day", "4",
             "--arms", "skills", "--out", str(out)],
            check=False, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads((out / "report.json").read_text())["arms"]["skills"]

    first, second = run("a"), run("b")
    assert "wall-clock poll is off" in first["cadence"]

    def played(arm: dict) -> list:
        return [(e["task_id"], e["step_accuracy"], e["tool_errors"], e["success"]) for e in arm["episodes"]]

    def evolved(arm: dict) -> list:
        return [(e["trigger"], e["after_episode"], [p.get("name") for p in e["accepted"]])
                for e in arm["evolutions"]]

    assert played(first) == played(second)
    assert evolved(first) == evolved(second)
    assert first["evolutions"], "the day's tool errors should trigger at least one evolution"
