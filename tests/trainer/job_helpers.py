"""Cheap real job parts for the scheduler's tests: a step-counting training body that
checkpoints every step, data read from the real store, the real registry, a score gate.

None of them imitates molt's code: each is a complete implementation of its Protocol
in trainer/jobs.py, only cheaper than RL (a step adds one to a counter).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from store.database import Database
from store.ids import new_id
from store.records import TurnRecord
from store.registry import Registry
from store.trajectories import TrajectoryStore
from trainer.jobs import GateOutcome, JobParts, TrainOutcome, TrainRun
from trainer.types import Split, Step

BASE = "toy"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def write_turns(db: Database, tenant_id: str, at: float, n: int = 1,
                      turn_type: str = "main") -> None:
    """Agent traffic: turns as the recorder writes them, stamped `at`."""
    recs = [TurnRecord(id=new_id("turn"), tenant_id=tenant_id, session_id=new_id("ses"), idx=0,
                       turn_type=turn_type, created_at=at - (n - 1 - i) * 1e-3, request_model=BASE,
                       stream=False, request={"model": BASE, "messages": [
                           {"role": "user", "content": f"task {i}"}]},
                       content=f"done {i}", status="ok") for i in range(n)]
    await TrajectoryStore(db).write_turns(recs)


class StoreData:
    """`LoadData`: every recorded agent turn up to `until`; each fourth one is held out."""

    def __init__(self, db: Database) -> None:
        self.turns = TrajectoryStore(db)

    async def __call__(self, tenant: str, tenant_id: str, until: float) -> Split:
        rows = [r for r in await self.turns.turns_since(0.0, tenant_id=tenant_id)
                if r["created_at"] <= until and r["turn_type"] != "replay"]
        steps = [Step(turn_id=r["id"], session_id=r["session_id"], tenant_id=tenant_id,
                      idx=r["idx"], created_at=r["created_at"], model=r["request_model"],
                      messages=r["request"]["messages"], tools=None,
                      completion={"role": "assistant", "content": r["content"]}, reward=1.0)
                 for r in rows]
        return Split(train=[s for i, s in enumerate(steps) if i % 4 != 3],
                     heldout=[s for i, s in enumerate(steps) if i % 4 == 3])


class CountingBody:
    """`TrainBody`: `total` steps; after each one it writes `checkpoint-N.json` and reports.

    With `permits`, each step waits for one (the test paces the steps); the wait
    gives way as soon as the run is told to stop.
    """

    def __init__(self, total: int, permits: threading.Semaphore | None = None) -> None:
        self.total = total
        self.permits = permits
        self.resumed_from: list[Path | None] = []
        self.train_sizes: list[int] = []
        self.running = 0
        self.max_running = 0
        self.step = 0
        self._lock = threading.Lock()
        self._progress = threading.Condition()

    def wait_step(self, n: int, timeout_s: float = 30.0) -> bool:
        with self._progress:
            return self._progress.wait_for(lambda: self.step >= n, timeout=timeout_s)

    def _permit(self, run: TrainRun) -> bool:
        if self.permits is None:
            return True
        while not self.permits.acquire(timeout=0.01):
            if run.should_stop():
                return False
        return True

    def __call__(self, split: Split, run: TrainRun) -> TrainOutcome:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            return self._train(split, run)
        finally:
            with self._lock:
                self.running -= 1

    def _train(self, split: Split, run: TrainRun) -> TrainOutcome:
        self.resumed_from.append(run.resume_from)
        self.train_sizes.append(len(split.train))
        step = json.loads(run.resume_from.read_text())["step"] if run.resume_from else 0
        if step != run.steps_done:
            raise ValueError(f"checkpoint at step {step}, the job says {run.steps_done}")
        run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt = run.resume_from
        while step < self.total:
            if run.should_stop() or not self._permit(run):
                return TrainOutcome(step, False, checkpoint=ckpt)
            step += 1
            ckpt = run.checkpoint_dir / f"checkpoint-{step}.json"
            ckpt.write_text(json.dumps({"step": step}))
            run.report(step, {"reward": step / self.total})
            with self._progress:
                self.step = step
                self._progress.notify_all()
        artifact = run.work_dir / "artifact"
        artifact.mkdir(parents=True, exist_ok=True)
        save_file({"w": np.full((2, 2), float(step), dtype=np.float32)},
                  str(artifact / "model.safetensors"))
        return TrainOutcome(step, True, checkpoint=ckpt, artifact=artifact, kind="full",
                            metrics={"reward": 1.0, "kl": 0.01 * step}, config={"total": self.total})


class RegistryCandidates:
    """`RegisterCandidate`: the real registry, one toy base."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, tenant: str, outcome: TrainOutcome, meta: Mapping[str, Any]) -> str:
        assert outcome.artifact is not None
        m = self.registry.create(tenant, BASE, kind=outcome.kind, files_from=outcome.artifact,
                                 base_model=BASE, base_hash=None,
                                 parent=self.registry.active(tenant, BASE),
                                 data_window=dict(meta["data_window"]),
                                 metrics=dict(meta["metrics"]), config=dict(meta["config"]))
        return m.version


class ScoreGate:
    """`Gate`: promote through the registry when the candidate's reward reaches `bar`."""

    def __init__(self, registry: Registry, bar: float) -> None:
        self.registry = registry
        self.bar = bar

    async def __call__(self, tenant: str, version: str, split: Split) -> GateOutcome:
        reward = float(self.registry.get(tenant, BASE, version).metrics.get("reward", 0.0))
        figures = {"heldout": len(split.heldout), "reward": reward, "bar": self.bar}
        if reward < self.bar:
            return GateOutcome("rejected", False, figures)
        self.registry.promote(tenant, BASE, version, base_dir=None, reason="score gate")
        return GateOutcome("promoted", True, figures)


def parts(db: Database, body: CountingBody, registry: Registry, bar: float = 0.5) -> JobParts:
    return JobParts(load=StoreData(db), train=body, register=RegistryCandidates(registry),
                    gate=ScoreGate(registry, bar))
