"""`molt bench run --arms ttt-overnight,...` as a user runs it: days served by a TTT-enabled
version, the scheduler's overnight `ttt_delta` job in the idle window, the next day."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.arms import ARMS
from bench.report import next_day_table, overnight_table
from bench.runner import DEFAULT_CHECKPOINT, molt_settings
from molt.config import load_settings
from tests.bench.test_ttt_arm import bench_with_zero_ttt


@pytest.mark.timeout(900)
def test_the_overnight_job_makes_a_gated_delta_and_the_next_day_is_served_by_the_gates_choice(
        tmp_path: Path) -> None:
    # zero-initialised TTT layers: the overnight pass adds exactly nothing, so the gate can
    # only reject the delta, and the delta serves exactly as its parent does
    stdout, out = bench_with_zero_ttt(tmp_path, "--days", "3,4", "--tasks-per-day", "4",
                                      "--arms", "ttt-overnight,ttt-overnight-ungated", timeout=880)
    assert "## Overnight in-place TTT update (`ttt_delta`) windows" in stdout
    assert "## The day after each idle window" in stdout
    arms = json.loads((out / "report.json").read_text())["arms"]
    versions = {}
    for name, arm in arms.items():
        assert arm["overall"]["episodes"] == 8 and arm["overall"]["errors"] == 0
        (w,) = arm["windows"]
        parent = arm["ttt_layers"]["version"]
        # the scheduler's job: a ttt_delta child of the active TTT-enabled version
        assert (w["kind"], w["after_day"], w["job_status"]) == ("ttt-delta", 3, "succeeded")
        assert w["parent"] == w["version_parent"] == parent
        assert w["version"] != parent and w["version_kind"] == "ttt_delta"
        assert w["update"]["sessions"] >= 1 and w["update"]["tokens"] > 0
        assert w["update"]["delta_norm"] == 0.0  # zero layers stream no update
        assert w["update"]["overnight"] == "session_mean" and not w["update"]["bounded"]
        assert w["gate"]["status"] == "rejected" and w["gate"]["reasons"]
        assert w["gate"]["heldout"]["candidate"]["model"] == f"tiny@{w['version']}"
        # day 3 ran on the TTT-enabled version, every model request of it
        assert set(arm["per_day"]["3"]["served_versions"]) == {parent}
        versions[name] = (parent, w)
    parent, gated = versions["ttt-overnight"]
    _, ungated = versions["ttt-overnight-ungated"]
    # the gate kept the delta out: day 4 is served by the version it was judged against
    assert gated["served_next"] == parent and not gated["promoted"]
    assert set(arms["ttt-overnight"]["per_day"]["4"]["served_versions"]) == {parent}
    # the ungated arm served it anyway, and says so
    assert ungated["promoted_ungated"] and ungated["served_next"] == ungated["version"]
    assert set(arms["ttt-overnight-ungated"]["per_day"]["4"]["served_versions"]) == {
        ungated["version"]}
    # a zero delta answers exactly as its parent: the same day 4 either way
    day4 = [arms[n]["per_day"]["4"] for n in ("ttt-overnight", "ttt-overnight-ungated")]
    assert day4[0]["step_accuracy"] == day4[1]["step_accuracy"]
    summary = (out / "summary.md").read_text()
    assert f"the gate **rejected** the delta {gated['version']}" in summary
    assert "served anyway" in summary


def test_the_arms_settings_train_with_the_ttt_method(tmp_path: Path) -> None:
    assert {n for n, a in ARMS.items() if a.overnight} == {"ttt-overnight", "ttt-overnight-ungated"}
    assert ARMS["ttt-overnight-ungated"].overnight.ungated  # type: ignore[union-attr]
    settings = load_settings(None, molt_settings(ARMS["ttt-overnight"], tmp_path, DEFAULT_CHECKPOINT))
    assert settings.trainer.method == "ttt" and not settings.skills.enabled
    assert settings.trainer.gate == {"min_heldout": 4}  # the rl arm's gate minimum
    # the overnight update the job runs: the bounded mean of the sessions' updates
    from trainer.ttt_config import TTTTrainConfig

    job = TTTTrainConfig.from_dict(settings.trainer.ttt)
    assert (job.overnight, job.delta_scale, job.max_delta_ratio) == ("session_mean", 1.0, 0.1)


def _window(kind: str, status: str, **more: object) -> dict[str, object]:
    figures = {"paired": 5, "reference": {"accuracy": 0.6}, "candidate": {"accuracy": 0.8}}
    return {"kind": kind, "after_day": 4, "gate": {"status": status, "heldout": figures,
                                                  "retention": figures,
                                                  "reasons": ["held-out gain 0.000 < 0.02"]},
            **more}


def test_the_report_says_what_the_gate_decided_and_what_the_next_day_did() -> None:
    def arm(window: dict[str, object], before: float, after: float) -> dict[str, object]:
        day = {"step_accuracy": before, "affected_accuracy": None, "unaffected_accuracy": 1.0}
        return {"windows": [window], "ttt_layers": {"version": "v0001", "trained": {"cpu_s": 9.5,
                                                                                   "steps": 40}},
                "per_day": {"4": day, "5": {**day, "step_accuracy": after,
                                            "served_versions": {"v0002": 12}}}}

    ttt = _window("ttt-delta", "rejected", job="job_1", job_status="succeeded", parent="v0001",
                  version="v0002", served_next="v0001",
                  update={"sessions": 12, "tokens": 9000, "updates": 280, "clipped": 3,
                          "delta_norm": 0.25, "delta_ratio": 0.05, "bounded": True})
    report = {"days": [4, 5], "arms": {"rl": arm(_window("lora", "promoted"), 0.8, 0.95),
                                       "ttt-overnight": arm(ttt, 0.8, 0.7)}}
    table = "\n".join(overnight_table(report))
    assert ("| ttt-overnight | 4 | succeeded | v0001 -> v0002 | 12 | 9000 | 280 (3) | 0.2500 (0.050, bounded) | "
            "rejected | 60.0% -> 80.0% (5) | 60.0% -> 80.0% (5) | v0001 |") in table
    assert ("the gate **rejected** the delta v0002 (held-out gain 0.000 < 0.02); the next days "
            "are served by v0001") in table
    assert "served by v0001 (TTT layers: trained 40 steps, 9.5 CPU s)" in table
    nxt = "\n".join(next_day_table(report))
    assert "| rl | RL, after day 4 | promoted | day 5: v0002 (12) | 80.0% -> 95.0% |" in nxt
    assert "| ttt-overnight | overnight TTT, after day 4 | rejected | day 5: v0002 (12) | 80.0% -> 70.0% |" in nxt
    assert overnight_table({"days": [4], "arms": {"rl": {"windows": [_window("lora", "x")]}}}) == []
