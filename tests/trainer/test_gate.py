"""The eval gate: the decision rule on figures, and real candidates judged through real serving."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from molt.train_generate import HTTPGenerate
from store.registry import Registry
from store.registry_check import base_fingerprint
from tests.fakes.tiny_model import TEXT_ANSWER, TEXT_PROMPT
from tests.proxy.local_helpers import client, start_local
from tests.trainer.gate_helpers import (
    NEW_ANSWER,
    ROLLOUTS,
    drift_split,
    matches_recorded,
    shuffled,
    step,
    train_candidate,
)
from trainer.errors import GateError
from trainer.gate import (
    FAILED,
    EvalGate,
    Figures,
    GateResult,
    SetResult,
    compare,
    decide,
    register_candidate,
)
from trainer.gate_config import GateConfig
from trainer.types import Split, StepCheck

# -- the rule, on figures -------------------------------------------------------------------


def _set(name: str, ref: float | None, cand: float | None, paired: int = 10, *,
         cand_failed: int = 0, ref_failed: int = 0, steps: int = 10) -> SetResult:
    return SetResult(name, steps, paired, Figures("tiny@v0002", paired, cand, cand, cand_failed),
                     Figures("tiny@v0001", paired, ref, ref, ref_failed))


def test_better_heldout_and_kept_retention_is_promoted() -> None:
    d = decide(_set("heldout", 0.5, 0.9), _set("retention", 1.0, 0.98), GateConfig())
    assert d.promote
    assert d.reasons == ("held-out accuracy 0.500 -> 0.900, retention accuracy 1.000 -> 0.980",)


@pytest.mark.parametrize(("ref", "cand", "promote"), [(0.60, 0.62, True), (0.60, 0.619, False),
                                                      (0.50, 0.50, False), (0.9, 0.5, False)])
def test_heldout_must_improve_by_the_margin(ref: float, cand: float, promote: bool) -> None:
    d = decide(_set("heldout", ref, cand), _set("retention", 1.0, 1.0), GateConfig())
    assert d.promote is promote
    if not promote:
        assert "is below the margin 0.020" in d.reasons[0]


@pytest.mark.parametrize(("cand", "promote"), [(0.97, True), (0.969, False), (0.5, False)])
def test_retention_may_drop_by_the_allowance_only(cand: float, promote: bool) -> None:
    d = decide(_set("heldout", 0.2, 0.8), _set("retention", 1.0, cand), GateConfig())
    assert d.promote is promote
    if not promote:
        assert d.reasons[0].startswith("retention accuracy 1.000 -> ")
        assert "is over the allowed 0.030" in d.reasons[0]


def test_every_reason_against_is_given() -> None:
    d = decide(_set("heldout", 0.5, 0.5), _set("retention", 1.0, 0.0), GateConfig())
    assert not d.promote and len(d.reasons) == 2


def test_too_little_evidence_is_not_promoted() -> None:
    cfg = GateConfig(min_heldout=8, min_retention=3)
    d = decide(_set("heldout", 0.0, 1.0, paired=7), _set("retention", 1.0, 1.0, paired=2), cfg)
    assert not d.promote
    assert d.reasons == ("only 7 held-out steps scored for both models (need 8)",
                         "only 2 retention steps scored for both models (need 3)")
    # no retention set at all passes when min_retention is 0 (the default)
    empty = SetResult("retention", 0, 0, Figures("a", 0, None, None), Figures("b", 0, None, None))
    assert decide(_set("heldout", 0.0, 1.0), empty, GateConfig()).promote


def test_a_failed_generation_blocks_promotion() -> None:
    d = decide(_set("heldout", 0.0, 1.0, cand_failed=1), _set("retention", 1.0, 1.0,
                                                                ref_failed=2), GateConfig())
    assert not d.promote
    assert d.reasons == ("candidate failed 1 of 10 heldout generations",
                         "active version failed 2 of 10 retention generations")


def test_the_mean_metric_compares_mean_scores() -> None:
    held = SetResult("heldout", 8, 8, Figures("c", 8, 0.5, 0.5), Figures("r", 8, 0.0, 0.5))
    keep = _set("retention", 1.0, 1.0)
    assert not decide(held, keep, GateConfig(metric="accuracy")).promote
    assert decide(held, keep, GateConfig(metric="mean")).promote


def test_figures_are_over_the_steps_both_models_were_scored_on() -> None:
    steps = [step(i, TEXT_PROMPT, None, {"content": "x"}) for i in range(5)]
    cand = [1.0, -1.0, None, 1.0, FAILED]
    ref = [-1.0, -1.0, 1.0, None, 1.0]
    s = compare("heldout", "c", "r", steps, cand, ref)
    assert (s.steps, s.paired) == (5, 2)
    assert (s.candidate.scored, s.candidate.mean, s.candidate.accuracy, s.candidate.failed) == (
        2, 0.0, 0.5, 1)
    assert (s.reference.mean, s.reference.accuracy, s.reference.failed) == (-1.0, 0.0, 0)
    assert s.delta("accuracy") == 0.5


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="metric must be one of accuracy, mean"):
        GateConfig(metric="f1")
    with pytest.raises(ValueError):
        GateConfig(max_retention_drop=-0.1)


# -- the gate's own checks, with a scripted Generate (the Protocol's fake) ------------------------


class Scripted:
    """A `Generate` that answers from a table, and can run something on its first call."""

    def __init__(self, answers: dict[str, dict[str, Any]], on_first: Any = None) -> None:
        self.answers, self.on_first, self.calls = answers, on_first, 0

    async def __call__(self, model: str, messages: Sequence[Mapping[str, Any]],
                       tools: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1 and self.on_first is not None:
            self.on_first()
        return self.answers[model.partition("@")[2]]


def _registry(tmp_path: Path, tiny_base: Path, arts: dict[str, Path], n: int) -> Registry:
    reg = Registry(tmp_path / "registry")
    for i in range(1, n + 1):
        reg.create("default", "tiny", kind="lora", files_from=arts[f"lora{i}"], base_model="tiny",
                   base_hash=base_fingerprint(tiny_base))
    return reg


async def test_a_promotion_racing_the_evaluation_is_not_made(
    tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    reg = _registry(tmp_path, tiny_base, tiny_artifacts, 2)
    good, bad = {"role": "assistant", "content": NEW_ANSWER}, {"content": "no"}
    gen = Scripted({"v0002": good, "base": bad, "v0001": bad},
                   on_first=lambda: reg.promote("default", "tiny", "v0001", base_dir=tiny_base))
    gate = EvalGate(reg, gen, matches_recorded, GateConfig(min_heldout=2),
                    base_dirs={"tiny": tiny_base})
    r = await gate.judge("default", "tiny", "tiny", "v2", drift_split())
    assert r.reference == "base" and not r.promoted and r.status == "rejected"
    assert r.decision.reasons[0] == (
        "the active version changed from base to v0001 while the candidate was judged; "
        "judge it again")
    assert reg.active("default", "tiny") == "v0001"
    assert reg.get("default", "tiny", "v0002").eval_gate["status"] == "rejected"
    # judged again, against v0001 now, it passes; a version that is no candidate is refused
    r = await gate.judge("default", "tiny", "tiny", "v0002", drift_split())
    assert (r.reference, r.promoted) == ("v0001", True)
    with pytest.raises(GateError, match="v0002 is active, not a candidate"):
        await gate.judge("default", "tiny", "tiny", "v0002", drift_split())
    with pytest.raises(GateError, match="no version v0009"):
        await gate.judge("default", "tiny", "tiny", "v9", drift_split())


async def test_a_pass_is_only_recorded_when_promotion_is_off_and_a_refusal_is_reported(
    tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    reg = _registry(tmp_path, tiny_base, tiny_artifacts, 1)
    reg.create("default", "tiny", kind="lora", files_from=tiny_artifacts["lora2"],
               base_model="tiny", base_hash="fp-0123456789abcdef01234567")  # another base's
    good, bad = {"role": "assistant", "content": NEW_ANSWER}, {"content": "no"}
    gen = Scripted({"v0001": good, "v0002": good, "base": bad})
    r = await EvalGate(reg, gen, matches_recorded, GateConfig(min_heldout=2, promote=False)
                       ).judge("default", "tiny", "tiny", "v1", drift_split())
    assert (r.status, r.promoted, reg.active("default", "tiny")) == ("passed", False, None)
    assert reg.get("default", "tiny", "v0001").eval_gate["status"] == "passed"
    r = await EvalGate(reg, gen, matches_recorded, GateConfig(min_heldout=2),
                       base_dirs={"tiny": tiny_base}).judge("default", "tiny", "tiny", "v2",
                                                             drift_split())
    assert (r.status, reg.active("default", "tiny")) == ("rejected", None)
    assert r.decision.reasons[0].startswith("promotion refused: ")
    assert "wrong base model" in r.decision.reasons[0]


async def test_a_score_outside_the_range_is_an_error(
    tmp_path: Path, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    reg = _registry(tmp_path, tiny_base, tiny_artifacts, 1)
    ans = {"content": "x"}
    bad_check: StepCheck = lambda s, c: 2.0
    gate = EvalGate(reg, Scripted({"v0001": ans, "base": ans}), bad_check)
    with pytest.raises(GateError, match=r"returned 2.0 for turn turn_0; a score must be in"):
        await gate.judge("default", "tiny", "tiny", "v1", drift_split())


# -- real candidates, real serving ------------------------------------------------------------


@pytest.fixture(scope="module")
def candidates(tiny_base: Path) -> dict[str, Path]:
    """LoRA adapters trained on the drift rollouts: with the true rewards, and shuffled."""
    root = tiny_base.parent / "gate-candidates"
    true = [r for *_, r in ROLLOUTS]
    out = {"good": root / "good", "shuffled": root / "shuffled"}
    if not (out["shuffled"] / "adapter_model.safetensors").is_file():
        train_candidate(tiny_base, out["good"], true)
        train_candidate(tiny_base, out["shuffled"], shuffled(true))
    return out


def _split() -> Split:
    """The drift split, plus a held-out step neither model gets right (a system prompt)."""
    s = drift_split()
    sys_prompt = [{"role": "system", "content": "You are terse."}, *TEXT_PROMPT]
    s.heldout.append(step(3, sys_prompt, None, {"role": "assistant", "content": NEW_ANSWER}))
    return s


async def _judge(m: Any, reg: Registry, base_dir: Path, version: str,
                 config: GateConfig | None = None) -> GateResult:
    gen = HTTPGenerate(m.base_url, None, tenant="default", max_tokens=48)
    try:
        gate = EvalGate(reg, gen, matches_recorded,
                        config or GateConfig(min_heldout=3, min_retention=1),
                        base_dirs={"tiny": base_dir})
        return await gate.judge("default", "tiny", "tiny", version, _split())
    finally:
        await gen.aclose()


def _register(reg: Registry, base_dir: Path, art: Path, **kw: Any) -> str:
    return register_candidate(reg, "default", "tiny", art, kind="lora", base_model="tiny",
                              base_hash=kw.pop("base_hash", base_fingerprint(base_dir)),
                              **kw).version


def test_a_candidate_trained_on_shuffled_rewards_is_not_promoted(
    molt_factory: Any, tiny_base: Path, candidates: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = start_local(molt_factory, tiny_base)
    reg = Registry(m.settings.registry_root())
    version = _register(reg, tiny_base, candidates["shuffled"], config={"rewards": "shuffled"})
    with caplog.at_level(logging.INFO, logger="molt.trainer.gate"):
        r = asyncio.run(_judge(m, reg, tiny_base, version))

    assert (r.candidate, r.reference, r.status, r.promoted) == (version, "base", "rejected", False)
    # through serving: the shuffled candidate did not learn the new convention, and forgot the tool
    assert (r.heldout.paired, r.heldout.reference.accuracy, r.heldout.candidate.accuracy) == (
        3, 0.0, 0.0)
    assert (r.retention.paired, r.retention.reference.accuracy,
            r.retention.candidate.accuracy) == (1, 1.0, 0.0)
    assert len(r.decision.reasons) == 2
    assert "gain +0.000 is below the margin" in r.decision.reasons[0]
    assert "retention accuracy 1.000 -> 0.000: drop 1.000" in r.decision.reasons[1]

    meta = reg.get("default", "tiny", version)
    assert meta.status == "candidate" and reg.active("default", "tiny") is None
    gate = meta.eval_gate
    assert gate is not None and gate["status"] == "rejected" and gate["reference"] == "base"
    assert gate["heldout"]["candidate"]["model"] == f"tiny@{version}"
    assert gate["retention_delta"] == -1.0 and gate["config"]["min_heldout"] == 3
    # serving never moved
    raw = client(m).chat.completions.with_raw_response.create(
        model="tiny", messages=TEXT_PROMPT, temperature=0, max_tokens=48)
    assert raw.headers["x-molt-weight-version"] == "base"
    assert raw.parse().choices[0].message.content == TEXT_ANSWER
    # the evaluation went through serving as replays, pinned, never as agent traffic
    m.flush()
    evals = [t for t in m.run(m.state.trajectories.turns_since(0)) if "@" in t["request_model"]]
    assert len(evals) == 8
    assert {t["turn_type"] for t in evals} == {"replay"}
    assert {(t["request_model"], t["weight_version"]) for t in evals} == {
        (f"tiny@{version}", version), ("tiny@base", "base")}
    # the decision is logged, without the prompts
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "molt.trainer.gate"]
    assert len(logged) == 1 and f"{version} vs base: rejected" in logged[0]
    assert "Say hello" not in caplog.text and "Goodbye" not in caplog.text


def test_a_candidate_serving_refuses_is_not_promoted(
    molt_factory: Any, tiny_base: Path, tiny_artifacts: dict[str, Path]
) -> None:
    m = start_local(molt_factory, tiny_base)
    reg = Registry(m.settings.registry_root())
    version = _register(reg, tiny_base, tiny_artifacts["other_lora"], base_hash=None)
    r = asyncio.run(_judge(m, reg, tiny_base, version))
    assert not r.promoted and r.heldout.candidate.failed == 3
    assert r.retention.candidate.failed == 1 and r.heldout.reference.failed == 0
    assert r.decision.reasons[0] == "candidate failed 3 of 3 heldout generations"
    assert reg.active("default", "tiny") is None


def test_a_good_candidate_is_promoted_and_serving_switches_without_a_failed_request(
    molt_factory: Any, tiny_base: Path, candidates: dict[str, Path]
) -> None:
    m = start_local(molt_factory, tiny_base)
    reg = Registry(m.settings.registry_root())
    version = _register(reg, tiny_base, candidates["good"])
    expected = {"base": TEXT_ANSWER, version: NEW_ANSWER}

    started, switched, stop = threading.Event(), threading.Event(), threading.Event()
    results: list[tuple[str, str]] = []
    errors: list[str] = []

    def agent(i: int) -> None:
        c = client(m)
        while not stop.is_set():
            try:
                raw = c.chat.completions.with_raw_response.create(
                    model="tiny", messages=TEXT_PROMPT, temperature=0, max_tokens=48,
                    stream=bool(i % 2))
                parsed = raw.parse()
                if i % 2:
                    text = "".join(ch.choices[0].delta.content or "" for ch in parsed if ch.choices)
                else:
                    text = parsed.choices[0].message.content or ""
                served = raw.headers["x-molt-weight-version"]
                results.append((served, text))
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                errors.append(repr(exc))
                continue
            started.set()
            if served == version:
                switched.set()

    agents = [threading.Thread(target=agent, args=(i,)) for i in range(4)]
    for t in agents:
        t.start()
    try:
        assert started.wait(60)
        r = asyncio.run(_judge(m, reg, tiny_base, version))
        assert r.promoted, r.decision.reasons
        assert switched.wait(60), "serving never switched to the promoted version"
    finally:
        stop.set()
        for t in agents:
            t.join()

    assert errors == []
    assert {v for v, _ in results} == {"base", version}
    for served, text in results:
        assert text == expected[served], f"a response of {served} was not all {served}"
    assert (r.status, r.reference) == ("promoted", "base")
    assert r.heldout.candidate.accuracy == pytest.approx(2 / 3)
    assert r.heldout.reference.accuracy == 0.0
    assert r.retention.candidate.accuracy == r.retention.reference.accuracy == 1.0

    assert reg.active("default", "tiny") == version
    meta = reg.get("default", "tiny", version)
    assert meta.status == "active" and meta.eval_gate is not None
    assert meta.eval_gate["status"] == "promoted"
    assert meta.eval_gate["heldout_delta"] == pytest.approx(2 / 3)
    last = reg.history("default", "tiny")[-1]
    assert (last["action"], last["from"], last["to"]) == ("promote", None, version)
    assert last["reason"].startswith("eval gate: held-out accuracy 0.000 -> 0.667")
