"""The idle window of the rl arms of `molt bench run`, in-process against the arm's molt.

One window: the arm's molt has had days of traffic and now sees none. From its store,
the trainer's parts run in order (the scheduler's job orchestration lands apart):
query data (`trainer.data.load_split`), step rewards (recorded evidence with molt's
`EvidenceChecks`; or, for the labelled upper bound, toolworld's verifier), a LoRA trained
by `trainer.rl.train` within a CPU budget, registered as a candidate, judged by the eval
gate through the running molt (`HTTPGenerate`), and promoted through the real registry,
so serving hot-swaps before the next day.

`VerifierCheck` reads the benchmark's hidden truth: it lives here, never in trainer/.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.toolworld import Task, Verifier, calls_from_messages
from trainer.data import with_signal
from trainer.types import Split, Step

TENANT_NAME = "default"  # the open-mode tenant the driver's requests run as
BASE_NAME = "tiny"


@dataclass(frozen=True)
class RLPlan:
    """What an rl arm's idle windows do."""

    prm: str = "evidence"  # "evidence" (what molt sees) or "verifier" (upper bound)
    cpu_minutes: float = 15.0  # training stops (checkpointed) past this much process CPU time
    # RLConfig fields (the tuned window of bench/rl_window.py, see dev/LOG.md). No early stop
    # on reward: on a window's few flagged steps the batch reward reaches 1 long before the
    # rule generalises (stopping at 0.9 left new tasks' dates at 71%, 60 steps reached 100%;
    # dev/LOG.md 2026-12-03, session 5); the CPU budget and the gate bound the run.
    rl: Mapping[str, Any] = field(default_factory=lambda: {
        "num_generations": 8, "batch_size": 16, "max_completion_length": 64,
        "temperature": 1.0, "max_steps": 60, "learning_rate": 2e-3, "hindsight": True,
        "stop_at_reward": None, "save_steps": 10_000, "kl_samples": 8})
    focus: bool = True  # train only on the steps with a learning signal (trainer.data.with_signal)
    # skill-conditioned distillation (RLConfig.distill_coef): steps served with skills are
    # trained too, the model with the skills in context as teacher, so skills move into weights;
    # the answers served with skills are the teacher's samples (RLConfig.teacher_samples)
    distill: float = 0.0
    # distillation trains every step served with skills, not only the few flagged ones: it
    # needs more optimiser steps than RL on failures (30 left a rule half learned; see LOG)
    distill_steps: int = 120
    # ... and stops once this many steps in a row carry no signal (RLConfig.stop_idle_steps;
    # None: never; 8 stopped after 24 steps, before the rule was learned: see LOG)
    distill_idle_steps: int | None = None

    def windows_after(self, days: Sequence[int]) -> set[int]:
        """One window, after the first half of the days (days of traffic, window, more days)."""
        return {days[len(days) // 2 - 1]} if len(days) >= 2 else set()


def cpu_seconds() -> float:
    """This process's CPU time (all threads) plus its finished children's."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


class VerifierCheck:
    """Upper bound only: toolworld's verifier scores a candidate message (+1 right, -1 wrong)."""

    def __init__(self, task_of: Mapping[str, Task]) -> None:
        self.task_of = dict(task_of)  # turn id -> the task its episode played

    def __call__(self, step: Step, completion: Mapping[str, Any]) -> float | None:
        task = self.task_of.get(step.turn_id)
        if task is None:
            return None
        history = calls_from_messages(step.messages)
        calls = completion.get("tool_calls") or []
        if not calls:  # a final answer: right only once the plan is done
            return 1.0 if Verifier(task).progress(history) >= len(task.plan) else -1.0
        fn = calls[0].get("function") or {}
        verdict = Verifier(task).score_step(history, str(fn.get("name")), fn.get("arguments") or "{}")
        return 1.0 if verdict.ok else -1.0


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def learned_prm_agreement(checkpoint: Path, split: Split) -> dict[str, Any]:
    """How good a learned PRM is: fitted on the train steps' evidence labels, it scores the
    held-out steps' recorded answers; the share whose sign matches the verifier's (report only).
    """
    from modeling.loading import load_base
    from trainer.advantages import message_steps
    from trainer.prm import fit_or_none

    prm, fitted = fit_or_none(load_base(checkpoint), split.train)
    if prm is None or fitted is None:
        return {"status": "not enough labels (the evidence needs good and bad steps)"}
    n = agree = 0
    for step in split.heldout:
        comp = message_steps(step.completion)
        for scores, value in zip(step.step_scores, prm.score(step, comp), strict=False):
            if "verifier" in scores and value is not None:
                n += 1
                agree += int(_sign(value) == _sign(scores["verifier"]))
    return {"labels": fitted.examples, "train_accuracy": fitted.train_accuracy,
            "heldout_steps": n, "agreement": agree / n if n else None}


async def _load(store_url: str, prm: str) -> tuple[str, Any, Any]:
    from molt.train_checks import EvidenceChecks
    from store.database import Database
    from store.feedback import FeedbackStore
    from store.settings import StoreSettings
    from store.trajectories import TrajectoryStore
    from trainer.data import DataConfig, load_split
    from trainer.rewards import RewardWeights

    db = await Database.open(StoreSettings(url=store_url))
    try:
        turns = [r for r in await TrajectoryStore(db).turns_since(0.0) if r.get("turn_type") == "main"]
        if not turns:
            raise RuntimeError("no recorded traffic to train on")
        tenant_id = str(turns[0]["tenant_id"])
        weights = RewardWeights(verifier=1.0) if prm == "verifier" else RewardWeights()
        split = await load_split(db, tenant_id, DataConfig(heldout_fraction=0.2), weights)
        checks = await EvidenceChecks.mine(TrajectoryStore(db), FeedbackStore(db), tenant_id)
    finally:
        await db.close()
    return tenant_id, split, checks


def idle_window(plan: RLPlan, *, url: str, store_url: str, registry_root: Path,
                checkpoint: Path, out: Path, task_of: Mapping[str, Task]) -> dict[str, Any]:
    """One idle window against the running molt at `url`; its figures, for the report."""
    from molt.train_generate import HTTPGenerate
    from store.registry import Registry
    from store.registry_check import base_fingerprint
    from trainer.gate import EvalGate, register_candidate
    from trainer.gate_config import GateConfig
    from trainer.rewards import RewardWeights, StepRewards, source_agreement
    from trainer.rl import train
    from trainer.rl_config import RLConfig

    t_wall, t_cpu = time.monotonic(), cpu_seconds()
    tenant_id, split, evidence = asyncio.run(_load(store_url, plan.prm))
    if plan.prm == "verifier":
        weights = RewardWeights(evidence=0.0, prm=0.0, judge=0.0, verifier=1.0)
        check: Any = VerifierCheck(task_of)
        checks = {"verifier": check}
    else:
        weights, check = RewardWeights(), evidence
        checks = {"evidence": evidence}
    n_train = len(split.train)
    report_agreement = {
        "recorded": source_agreement(split.train + split.heldout),  # each source vs the verifier
        "learned_prm": learned_prm_agreement(checkpoint, split)}
    if plan.focus:
        split.train = with_signal(split.train, served_skills=plan.distill > 0)
    report: dict[str, Any] = {"prm": plan.prm, "steps_recorded": n_train,
                              "steps_trained_on": len(split.train),
                              "heldout": len(split.heldout), "retention": len(split.retention),
                              "agreement_with_verifier": report_agreement}
    if not split.train:
        return {**report, "status": "no flagged steps: nothing to train"}
    budget = plan.cpu_minutes * 60
    distill = ({"distill_coef": plan.distill, "teacher_samples": True,
                "max_steps": plan.distill_steps, "stop_idle_steps": plan.distill_idle_steps}
               if plan.distill else {})
    rl_fields = {**dict(plan.rl), **distill, "focus": plan.focus}
    result = train(split, checkpoint, out, RLConfig(**rl_fields), StepRewards(weights, checks=checks),
                   should_stop=lambda: cpu_seconds() - t_cpu > budget)
    train_cpu = cpu_seconds() - t_cpu
    report.update(steps=result.steps, mean_reward=result.mean_reward, kl=result.kl,
                  stopped_by_budget=result.stopped_early, train_cpu_min=train_cpu / 60,
                  curve=[(int(r.get("step", 0)), r["reward"]) for r in result.log if "reward" in r])
    registry = Registry(registry_root)
    meta = register_candidate(registry, TENANT_NAME, BASE_NAME, result.adapter_dir or out, kind="lora",
                              base_model=BASE_NAME, base_hash=base_fingerprint(checkpoint),
                              config={**rl_fields, "prm": plan.prm, "focus": plan.focus},
                              metrics={"steps": result.steps, "mean_reward": result.mean_reward,
                                       "kl": result.kl, "train_cpu_min": train_cpu / 60})
    gen = HTTPGenerate(url + "/v1", None, tenant=TENANT_NAME, max_tokens=96)

    async def judge() -> Any:
        try:
            gate = EvalGate(registry, gen, check, GateConfig(min_heldout=4),
                            base_dirs={BASE_NAME: checkpoint})
            return await gate.judge(TENANT_NAME, BASE_NAME, BASE_NAME, meta.version, split)
        finally:
            await gen.aclose()

    gate = asyncio.run(judge())
    report.update(version=meta.version, gate=gate.to_dict(), promoted=gate.promoted,
                  tenant_id=tenant_id, window_cpu_min=(cpu_seconds() - t_cpu) / 60,
                  window_wall_min=(time.monotonic() - t_wall) / 60)
    return report
