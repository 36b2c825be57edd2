"""One training job, window by window: load data -> train -> register a candidate -> gate.

The four bodies are Protocols (`JobParts`) that `molt` fills in: the data split
(trainer/data.py), the training method (trainer/rl.py), the registry and the eval gate
(trainer/gate.py). This module only orchestrates them and records every step in the
store (`store.training`), so that:

- The data a job trains on is frozen at its first window: the split is written to
  `<work_dir>/split.json` and read back in every later window, so a job resumed from
  a checkpoint continues on the same data (turns up to `data_until`).
- The training body runs in a worker thread and stops cooperatively: it calls
  `TrainRun.should_stop()` after every optimiser step. When the run is told to stop
  (traffic returned, window closed, budget spent, cancel, shutdown) or reaches the
  window's step budget, the body saves a checkpoint and returns `finished=False`; the
  job is then `paused` with that checkpoint and its step count (or `cancelled`), and
  the next window resumes from it (`TrainRun.resume_from`).
- A finished body's artifact is registered as a `candidate` version and judged by
  the gate; the job `succeeded` with the version and the gate's figures. Any error
  marks the job `failed` with the message; nothing is retried until new data arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from store.training import TrainingJob, TrainingStore
from trainer.types import Split, Step
from trainer.windows import Window

log = logging.getLogger("molt.trainer.jobs")

SPLIT_FILE = "split.json"
CHECKPOINTS = "checkpoints"


class Control:
    """The scheduler's side of a running window: a stop flag with its reason, and the
    progress the body reports (read by the scheduler at each tick). Thread-safe."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.step = 0
        self.metrics: dict[str, float] = {}

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        with self._lock:
            self.step = step
            self.metrics.update({k: float(v) for k, v in metrics.items()})


@dataclass(slots=True)
class TrainRun:
    """What a training body gets for one window."""

    job_id: str
    tenant: str
    work_dir: Path  # the job's folder, the same in every window
    checkpoint_dir: Path  # where the body saves checkpoints (`<work_dir>/checkpoints`)
    resume_from: Path | None  # the checkpoint the last window ended on
    steps_done: int  # optimiser steps done in earlier windows
    stop_at_step: int | None  # this window's step budget, as a total step count
    control: Control = field(default_factory=Control)

    def should_stop(self) -> bool:
        """True once the window is over: told to stop, or the step budget is reached."""
        if self.control.stopping:
            return True
        return self.stop_at_step is not None and self.control.step >= self.stop_at_step

    def report(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        """The total optimiser steps so far and the latest figures (reward, kl, ...)."""
        self.control.report(step, metrics or {})


@dataclass(slots=True)
class TrainOutcome:
    """What a training body returns at the end of a window."""

    steps: int  # total optimiser steps, earlier windows included
    finished: bool  # False: it stopped early; resume from `checkpoint`
    checkpoint: Path | None = None
    artifact: Path | None = None  # finished: the trained artifact folder (registry layout)
    kind: str = "lora"  # the registry's artifact kind
    metrics: dict[str, float] = field(default_factory=dict)  # reward, kl, ...
    config: dict[str, Any] = field(default_factory=dict)  # saved in the version's meta


@dataclass(slots=True)
class GateOutcome:
    status: str  # "promoted" | "passed" | "rejected"
    promoted: bool
    figures: dict[str, Any] = field(default_factory=dict)


class LoadData(Protocol):
    """The query-data split of a tenant, from turns recorded up to `until`."""

    async def __call__(self, tenant: str, tenant_id: str, until: float) -> Split: ...


class TrainBody(Protocol):
    """Train on `split.train` in one window (blocking; runs in a worker thread).

    Call `run.report(step, metrics)` and then `run.should_stop()` after every optimiser
    step; when it says stop, save a checkpoint and return `finished=False`. Start from
    `run.resume_from` when it is set.
    """

    def __call__(self, split: Split, run: TrainRun) -> TrainOutcome: ...


class RegisterCandidate(Protocol):
    """Add a finished artifact to the registry as a `candidate`; return its version."""

    async def __call__(self, tenant: str, outcome: TrainOutcome,
                       meta: Mapping[str, Any]) -> str: ...


class Gate(Protocol):
    """Judge candidate `version` against the active one (and maybe promote it)."""

    async def __call__(self, tenant: str, version: str, split: Split) -> GateOutcome: ...


@dataclass(slots=True)
class JobParts:
    load: LoadData
    train: TrainBody
    register: RegisterCandidate
    gate: Gate


@dataclass(frozen=True, slots=True)
class Budget:
    minutes: float
    steps: int


def write_split(split: Split, path: Path) -> None:
    data = {name: [asdict(s) for s in getattr(split, name)]
            for name in ("train", "heldout", "retention")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_split(path: Path) -> Split:
    data = json.loads(path.read_text())
    fields = set(Step.__dataclass_fields__)
    return Split(**{name: [Step(**{k: v for k, v in s.items() if k in fields})
                           for s in data.get(name, [])]
                    for name in ("train", "heldout", "retention")})


class JobRunner:
    """Runs one window of one job and records what happened."""

    def __init__(self, store: TrainingStore, parts: JobParts, jobs_dir: Path,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.parts = parts
        self.jobs_dir = Path(jobs_dir)
        self.clock = clock

    async def run(self, job: TrainingJob, window: Window, budget: Budget, control: Control,
                  holder: str) -> TrainingJob:
        """One window of `job`: `begin` it, then `train` it to the window's end."""
        job = await self.begin(job, window, budget, holder)
        return await self.train(job, budget, control)

    async def begin(self, job: TrainingJob, window: Window, budget: Budget,
                    holder: str) -> TrainingJob:
        """Record that `job` runs (`started`, or `resumed` in a later window)."""
        now = self.clock()
        work = Path(job.work_dir) if job.work_dir else self.jobs_dir / job.id
        resumed = job.windows > 0
        await self.store.update(
            job.id, now=now, status="running", holder=holder, work_dir=str(work),
            started_at=job.started_at or now, windows=job.windows + 1, stop_reason=None,
            last_window=window.key, event="resumed" if resumed else "started",
            detail={"window": window.to_dict(), "budget_minutes": budget.minutes,
                    "budget_steps": budget.steps, "from_step": job.steps,
                    "checkpoint": job.checkpoint})
        return await self.store.get(job.id)

    async def train(self, job: TrainingJob, budget: Budget, control: Control) -> TrainingJob:
        """Train a begun job until the window ends; record how it ended."""
        assert job.work_dir is not None
        try:
            await self._run(job, Path(job.work_dir), budget, control)
        except Exception as exc:  # noqa: BLE001 - a failed job is recorded, never lost
            log.error("training job %s (%s) failed: %s: %s", job.id, job.tenant,
                      type(exc).__name__, exc)
            now = self.clock()
            await self.store.update(job.id, now=now, status="failed", finished_at=now,
                                    steps=max(job.steps, control.step),
                                    error=f"{type(exc).__name__}: {exc}", event="failed",
                                    detail={"error": type(exc).__name__})
        return await self.store.get(job.id)

    async def _split(self, job: TrainingJob, work: Path) -> Split:
        path = work / SPLIT_FILE
        if path.is_file():
            return await asyncio.to_thread(read_split, path)
        split = await self.parts.load(job.tenant, job.tenant_id, job.data_until)
        work.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_split, split, path)
        return split

    async def _run(self, job: TrainingJob, work: Path, budget: Budget, control: Control) -> None:
        split = await self._split(job, work)
        sizes = {"train": len(split.train), "heldout": len(split.heldout),
                 "retention": len(split.retention)}
        if not split.train:
            now = self.clock()
            await self.store.update(job.id, now=now, status="succeeded", finished_at=now,
                                    stop_reason="no_data", metrics={"data": sizes},
                                    event="succeeded", detail={"reason": "no training steps",
                                                               "data": sizes})
            return
        control.step = job.steps
        run = TrainRun(
            job_id=job.id, tenant=job.tenant, work_dir=work, checkpoint_dir=work / CHECKPOINTS,
            resume_from=Path(job.checkpoint) if job.checkpoint else None, steps_done=job.steps,
            stop_at_step=job.steps + budget.steps, control=control,
        )
        outcome = await asyncio.to_thread(self.parts.train, split, run)
        metrics = {**control.metrics, **outcome.metrics}
        now = self.clock()
        if not outcome.finished:
            reason = control.reason or ("budget_steps" if outcome.steps >= (run.stop_at_step or 0)
                                        else "stopped")
            status = "cancelled" if reason == "cancelled" else "paused"
            checkpoint = str(outcome.checkpoint) if outcome.checkpoint else job.checkpoint
            await self.store.update(
                job.id, now=now, status=status, steps=outcome.steps, checkpoint=checkpoint,
                stop_reason=reason, metrics={**metrics, "data": sizes},
                finished_at=now if status == "cancelled" else None, event=status,
                detail={"reason": reason, "steps": outcome.steps, "checkpoint": checkpoint})
            return
        if outcome.artifact is None:
            raise ValueError("the training body finished without an artifact")
        await self.store.update(job.id, now=now, steps=outcome.steps, metrics={**metrics,
                                "data": sizes}, event="trained",
                                detail={"steps": outcome.steps, "metrics": metrics})
        meta = {"job": job.id, "data_window": {"until": job.data_until, **sizes},
                "metrics": metrics, "config": outcome.config, "kind": outcome.kind}
        version = await self.parts.register(job.tenant, outcome, meta)
        await self.store.update(job.id, now=self.clock(), version=version, event="registered",
                                detail={"version": version})
        gate = await self.parts.gate(job.tenant, version, split)
        now = self.clock()
        await self.store.update(
            job.id, now=now, status="succeeded", finished_at=now, stop_reason=None,
            gate={"status": gate.status, "promoted": gate.promoted, **gate.figures},
            event="gated", detail={"version": version, "status": gate.status,
                                   "promoted": gate.promoted})
