"""The real parts of a training job: query data, LoRA RL with step rewards, the eval gate.

`trainer/jobs.py` runs a job window by window through four small Protocols; this
module fills them in for `molt serve` / `molt worker` (DESIGN.md: the trainer
meets the evolver and serving only here, in the composition root):

- load: `trainer.data.load_split` (query data of the current skill generation,
  held-out sessions, a retention sample), cut at the job's `data_until`;
- train (`trainer.method`): `trainer.rl.train` (LoRA RL) on the served local model, or
  `trainer.ttt.TTTBody` (in-place TTT layers, then the overnight fast-weight delta);
  LoRA RL is rewarded per step by the
  recorded evidence (`molt.train_checks.EvidenceChecks`: the evolver's checks)
  combined with the rewards recorded on each step; it counts optimiser steps
  for the job's progress and stops cooperatively at the window's budget;
- register: the adapter becomes the next `candidate` version in the registry;
- gate: `trainer.gate.EvalGate` through this process's own serving
  (`molt.train_generate.HTTPGenerate`, pinned `alias@vN`), scored by the same
  evidence checks; a pass promotes, and serving hot-swaps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from molt.train_checks import EvidenceChecks
from molt.train_generate import HTTPGenerate
from store.database import Database
from store.errors import InvalidInput
from store.feedback import FeedbackStore
from store.registry import Registry, base_id, served_base_dirs
from store.registry_check import base_fingerprint
from store.settings import ModelRoute, MoltSettings
from store.trajectories import TrajectoryStore
from trainer.data import DataConfig, load_split, with_signal
from trainer.gate import EvalGate, register_candidate
from trainer.gate_config import GateConfig
from trainer.jobs import GateOutcome, JobParts, TrainOutcome, TrainRun
from trainer.rewards import StepRewards
from trainer.rl import train
from trainer.rl_config import RLConfig
from trainer.types import Split


def training_route(settings: MoltSettings) -> ModelRoute:
    """The local route the trainer trains: `trainer.model`, else the first local route."""
    from molt.wiring import with_default_model

    routes = [r for r in with_default_model(settings).models if r.local]
    wanted = settings.trainer.model
    for r in routes:
        if wanted is None or r.alias == wanted:
            return r
    raise InvalidInput(f"no local model route {wanted!r} to train" if wanted else
                       "no local model route to train: add a [[models]] entry with `local = ...`")


def _mine_in_thread(settings: MoltSettings, tenant_id: str) -> EvidenceChecks:
    """Evidence checks read on a fresh engine (the train body runs in a worker thread)."""

    async def run() -> EvidenceChecks:
        db = await Database.open(settings.store)
        try:
            return await EvidenceChecks.mine(TrajectoryStore(db), FeedbackStore(db), tenant_id)
        finally:
            await db.close()

    return asyncio.run(run())


class TrainingParts:
    """`JobParts` for one process: its settings, store and registry."""

    def __init__(self, settings: MoltSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.route = training_route(settings)
        self.base_dir = Path(self.route.local or "")
        self.base = base_id(self.route.upstream_model or self.route.alias)
        self.registry = Registry.from_settings(settings)
        self._tenant_ids: dict[str, str] = {}

    def parts(self) -> JobParts:
        return JobParts(load=self.load, train=self.train, register=self.register, gate=self.gate)

    async def load(self, tenant: str, tenant_id: str, until: float) -> Split:
        self._tenant_ids[tenant] = tenant_id
        split = await load_split(self.db, tenant_id, DataConfig(**self.settings.trainer.data))
        split = Split(*([s for s in part if s.created_at <= until]
                        for part in (split.train, split.heldout, split.retention)))
        if self.settings.trainer.method == "lora_rl":
            cfg = RLConfig.from_dict(dict(self.settings.trainer.rl))
            if cfg.focus:  # the job's frozen split is what trains: none left ends it as no_data
                split.train = with_signal(split.train, served_skills=cfg.distill_coef > 0)
        return split

    def _active_dir(self, tenant: str) -> Path | None:
        active = self.registry.active(tenant, self.base)
        return self.registry.path(tenant, self.base, active) if active else None

    def train(self, split: Split, run: TrainRun) -> TrainOutcome:
        if self.settings.trainer.method == "ttt":
            from trainer.ttt import TTTBody
            from trainer.ttt_config import TTTTrainConfig

            body = TTTBody(self.base_dir, TTTTrainConfig.from_dict(dict(self.settings.trainer.ttt)),
                           self._active_dir)
            return body(split, run)
        cfg = RLConfig.from_dict(dict(self.settings.trainer.rl))
        if run.stop_at_step is not None:
            cfg.max_steps = min(cfg.max_steps, run.stop_at_step)
        tenant_id = split.train[0].tenant_id if split.train else self._tenant_ids.get(run.tenant, "")
        checks = _mine_in_thread(self.settings, tenant_id)
        rewards = StepRewards(checks={"evidence": checks})
        calls = {"n": run.steps_done, "checked": 0}

        def should_stop() -> bool:  # trainer.rl: once before training, then after every step
            calls["checked"] += 1
            if calls["checked"] > 1:
                calls["n"] += 1
                run.report(calls["n"])
            return run.should_stop()

        result = train(split, self.base_dir, run.work_dir / "rl", cfg, rewards,
                       should_stop=should_stop, resume_from=run.resume_from)
        finished = not result.stopped_early and result.adapter_dir is not None
        metrics = {k: v for k, v in (("reward", result.mean_reward), ("kl", result.kl))
                   if v is not None}
        return TrainOutcome(
            steps=result.steps, finished=finished, checkpoint=result.checkpoint_dir,
            artifact=result.adapter_dir if finished else None, kind="lora",
            metrics={**metrics, "evidence_checks": float(len(checks))}, config=cfg.to_dict(),
        )

    async def register(self, tenant: str, outcome: TrainOutcome, meta: dict[str, Any]) -> str:
        assert outcome.artifact is not None
        fingerprint = await asyncio.to_thread(base_fingerprint, self.base_dir)
        version = await asyncio.to_thread(
            register_candidate, self.registry, tenant, self.base, outcome.artifact, kind=outcome.kind,
            base_model=str(self.base_dir), base_hash=fingerprint, config=outcome.config,
            metrics=outcome.metrics, **{k: v for k, v in meta.items()
                                        if k in ("data_window", "skill_generation", "parent")},
        )
        return version.version

    async def gate(self, tenant: str, version: str, split: Split) -> GateOutcome:
        tenant_id = self._tenant_ids.get(tenant) or next(
            (s.tenant_id for s in (*split.heldout, *split.train)), "")
        checks = await EvidenceChecks.mine(TrajectoryStore(self.db), FeedbackStore(self.db),
                                           tenant_id)
        generate = HTTPGenerate.from_settings(self.settings, tenant)
        try:
            gate = EvalGate(self.registry, generate, checks, GateConfig(**self.settings.trainer.gate),
                            base_dirs=served_base_dirs(self.settings.models or [self.route]))
            result = await gate.judge(tenant, self.base, self.route.alias, version, split)
        finally:
            await generate.aclose()
        return GateOutcome(result.status, result.promoted, result.to_dict())


def training_parts(settings: MoltSettings, db: Database) -> JobParts:
    """The `PartsFactory` of `molt serve`: LoRA RL on the served local model."""
    return TrainingParts(settings, db).parts()

