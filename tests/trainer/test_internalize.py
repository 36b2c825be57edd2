"""Skills become weights: the gate finds the skills a candidate no longer needs in context.

A scripted `Generate` stands for serving: a model answers a step right when it
follows the rule by itself, or when the skill `date-format` is in its context
(serving injects it unless the request excludes it). `reminders` is served too
and changes no answer; `rare` is served on too few steps to be tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from store.registry import Registry
from store.registry_check import base_fingerprint
from trainer.gate import EvalGate, Figures, SetResult, decide
from trainer.gate_config import GateConfig
from trainer.internalize import Internalization, tokens_per_request, verdict
from trainer.types import Split, Step

RIGHT, WRONG = "14.08.2026", "2026-08-14"
TOKENS = {"date-format": 40, "reminders": 25, "rare": 10}


class Serving:
    """A `Generate`: which versions follow the rule without `date-format` in context."""

    def __init__(self, follows: set[str]) -> None:
        self.follows = follows
        self.excluded: list[tuple[str, tuple[str, ...]]] = []

    async def __call__(self, model: str, messages: Sequence[Mapping[str, Any]],
                       tools: Sequence[Mapping[str, Any]] | None, *,
                       exclude_skills: Sequence[str] = ()) -> dict[str, Any]:
        if exclude_skills:
            self.excluded.append((model, tuple(exclude_skills)))
        version = model.partition("@")[2]
        knows = version in self.follows or "date-format" not in exclude_skills
        return {"role": "assistant", "content": RIGHT if knows else WRONG}


def check(step: Step, completion: Mapping[str, Any]) -> float | None:
    return 1.0 if completion.get("content") == step.completion["content"] else -1.0


def _step(i: int, skills: Sequence[str]) -> Step:
    return Step(turn_id=f"turn_{i}", session_id=f"ses_{i}", tenant_id="ten", idx=0,
                created_at=float(i), model="tiny",
                messages=[{"role": "user", "content": f"Book the table {i}"}], tools=None,
                completion={"role": "assistant", "content": RIGHT},
                injected_skills=list(skills), skill_tokens={s: TOKENS[s] for s in skills})


def split() -> Split:
    both = ("date-format", "reminders")
    held = [_step(i, both) for i in range(4)] + [_step(4, ("rare",)), _step(5, ())]
    keep = [_step(10 + i, both) for i in range(2)] + [_step(12, ("rare",))]
    return Split(heldout=held, retention=keep)


@pytest.fixture
def registry(tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]) -> Registry:
    reg = Registry(tmp_path / "registry")
    for i in (1, 2, 3):
        reg.create("default", "tiny", kind="lora", files_from=tiny_artifacts[f"lora{i}"],
                   base_model="tiny", base_hash=base_fingerprint(tiny_base))
    return reg


def _gate(reg: Registry, serving: Serving, tiny_base: Path, **cfg: Any) -> EvalGate:
    return EvalGate(reg, serving, check, GateConfig(min_heldout=4, **cfg),
                    base_dirs={"tiny": tiny_base})


async def test_a_version_that_follows_the_rule_internalizes_the_skill(
    registry: Registry, tiny_base: Path
) -> None:
    serving = Serving(follows={"v0001"})
    r = await _gate(registry, serving, tiny_base).judge("default", "tiny", "tiny", "v1", split())

    assert r.internalization is not None
    tests = {t.name: t for t in r.internalization.tested}
    assert set(tests) == {"date-format", "reminders", "rare"}
    date = tests["date-format"]
    assert date.internalized and (date.steps, date.paired) == (6, 6)
    assert (date.candidate_with, date.candidate_without) == (1.0, 1.0)
    assert (date.reference_with, date.reference_without) == (1.0, 0.0)
    assert not tests["reminders"].internalized
    assert "changes no answer of the reference" in tests["reminders"].reason
    assert not tests["rare"].internalized and tests["rare"].reason == (
        "served on only 2 evaluation steps (need 3)")
    # judged as it will be served: without the skill, against the base with it
    assert r.internalization.skills == ("date-format",)
    assert r.internalization.heldout is not None
    assert r.internalization.heldout.candidate.model == "tiny@v0001 without date-format"
    assert r.internalization.heldout.candidate.accuracy == 1.0
    # no gain over the reference, which has the skill: the gain is the context it saves
    assert (r.heldout.candidate.accuracy, r.heldout.reference.accuracy) == (1.0, 1.0)
    assert r.promoted and r.decision.internalized == ("date-format",)
    assert r.decision.reasons[1] == (
        "internalizes skills date-format: -27 tokens a request at no loss")  # 6 x 40 / 9
    meta = registry.get("default", "tiny", "v0001")
    assert meta.status == "active" and meta.internalized_skills == ["date-format"]
    assert meta.eval_gate is not None and meta.eval_gate["internalized_skills"] == ["date-format"]
    assert registry.internalized_by_active("default") == {"date-format": ["tiny@v0001"]}
    # the reference was asked without a skill only where the candidate passed without it
    assert ("tiny@base", ("reminders",)) in serving.excluded
    assert ("tiny@v0001", ("rare",)) not in serving.excluded


async def test_a_version_that_needs_the_skill_internalizes_nothing(
    registry: Registry, tiny_base: Path
) -> None:
    serving = Serving(follows=set())
    r = await _gate(registry, serving, tiny_base).judge("default", "tiny", "tiny", "v1", split())
    assert r.internalization is not None and r.internalization.skills == ()
    date = next(t for t in r.internalization.tested if t.name == "date-format")
    assert not date.internalized
    assert date.reason == "the candidate needs it: accuracy 1.000 with it, 0.000 without"
    assert date.reference_without is None  # not asked: the candidate already failed
    assert not r.promoted and r.decision.internalized == ()
    assert "gain +0.000 is below the margin 0.020" in r.decision.reasons[0]
    assert registry.get("default", "tiny", "v0001").internalized_skills == []


async def test_a_child_keeps_what_its_parent_internalized_and_a_switch_turns_it_off(
    registry: Registry, tiny_base: Path
) -> None:
    serving = Serving(follows={"v0001", "v0002"})
    gate = _gate(registry, serving, tiny_base)
    assert (await gate.judge("default", "tiny", "tiny", "v1", split())).promoted
    # v2 is judged against v1, which is served without date-format: inherited, tested jointly
    r = await gate.judge("default", "tiny", "tiny", "v2", split())
    assert r.internalization is not None
    assert r.internalization.inherited == ("date-format",)
    assert "date-format" not in {t.name for t in r.internalization.tested}
    assert r.promoted and registry.get("default", "tiny", "v0002").internalized_skills == [
        "date-format"]
    # with the switch off nothing is tested, and v3 is judged served with every skill
    off = _gate(registry, serving, tiny_base, internalize=False)
    r = await off.judge("default", "tiny", "tiny", "v3", split())
    assert r.internalization is None and r.decision.internalized == ()
    assert registry.get("default", "tiny", "v0003").internalized_skills == []


# -- the rules, on figures ------------------------------------------------------------------


def test_the_skill_rule() -> None:
    cfg = GateConfig()
    ok = [(1.0, 1.0, 1.0, -1.0)] * 3
    assert verdict("s", 3, ok, cfg).internalized
    assert verdict("s", 3, ok[:2], cfg).reason == "only 2 steps served it were scored (need 3)"
    needs = [(1.0, 1.0, 1.0, -1.0), (1.0, 1.0, 1.0, -1.0), (1.0, -1.0, 1.0, -1.0)]
    assert not verdict("s", 3, needs, cfg).internalized
    assert verdict("s", 3, needs, GateConfig(internalize_margin=0.34)).internalized
    poor = [(-1.0, -1.0, 1.0, -1.0), (-1.0, -1.0, 1.0, -1.0), (1.0, 1.0, 1.0, -1.0)]
    assert "under the floor 0.500" in verdict("s", 3, poor, cfg).reason
    unneeded = [(1.0, 1.0, 1.0, 1.0)] * 3
    assert not verdict("s", 3, unneeded, cfg).internalized
    assert verdict("s", 3, unneeded, GateConfig(internalize_needed=False)).internalized
    assert "2 generations without it failed" in verdict("s", 3, ok, cfg, failed=2).reason


def _set(name: str, ref: float, cand: float, paired: int = 10) -> SetResult:
    return SetResult(name, paired, paired, Figures("c", paired, cand, cand),
                     Figures("r", paired, ref, ref))


def test_decide_promotes_an_equal_candidate_that_drops_skills() -> None:
    found = Internalization((), (), ("date-format",), 27.4, _set("heldout", 1.0, 1.0),
                            _set("retention", 1.0, 1.0))
    d = decide(_set("heldout", 1.0, 1.0), _set("retention", 1.0, 1.0), GateConfig(), found)
    assert d.promote and d.internalized == ("date-format",)
    assert d.reasons == (("held-out accuracy 1.000 -> 1.000, retention accuracy 1.000 -> "
                          "1.000 served without date-format"),
                         "internalizes skills date-format: -27 tokens a request at no loss")
    # worse without the skills: judged with them, and they stay served
    worse = Internalization((), (), ("date-format",), 27.4, _set("heldout", 1.0, 0.8),
                            _set("retention", 1.0, 1.0))
    d = decide(_set("heldout", 0.5, 1.0), _set("retention", 1.0, 1.0), GateConfig(), worse)
    assert d.promote and d.internalized == ()
    assert d.reasons[1].startswith("without skills date-format: held-out accuracy 1.000 -> "
                                   "0.800: gain -0.200 is below the margin 0.000")
    assert d.reasons[1].endswith("; they stay served")
    # forgetting blocks an internalizing candidate too
    forgets = Internalization((), (), ("date-format",), 27.4, _set("heldout", 1.0, 1.0),
                              _set("retention", 1.0, 0.5))
    d = decide(_set("heldout", 1.0, 1.0), _set("retention", 1.0, 1.0), GateConfig(), forgets)
    assert not d.promote and d.internalized == ()


def test_tokens_per_request_counts_what_the_records_injected() -> None:
    s = split()
    steps = [*s.heldout, *s.retention]
    assert tokens_per_request(steps, ["date-format"]) == pytest.approx(6 * 40 / 9)
    assert tokens_per_request(steps, ["date-format", "rare"]) == pytest.approx((240 + 20) / 9)
    assert tokens_per_request([], ["date-format"]) == 0.0
