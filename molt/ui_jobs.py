"""The dashboard's training-job list, read from the trainer's job store.

Curves come from what the training body wrote beside its artifact: trl's log
(`<job>/rl/adapter/train_log.json`: loss and reward per logged step) for LoRA RL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.ui import TrainingJob
from store.keys import KeyStore
from store.training import TrainingJob as StoredJob
from store.training import TrainingStore


def _curves(work_dir: str | None) -> tuple[list[float], list[float]]:
    if not work_dir:
        return [], []
    path = Path(work_dir) / "rl" / "adapter" / "train_log.json"
    try:
        rows: list[dict[str, Any]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return [], []
    loss = [float(r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float))]
    reward = [float(r["reward"]) for r in rows if isinstance(r.get("reward"), (int, float))]
    return loss, reward


class StoreJobs:
    """`proxy.ui.TrainingJobs` over `store.training.TrainingStore`."""

    def __init__(self, store: Callable[[], TrainingStore | None], method: str) -> None:
        self.store = store  # the trainer service's, once the app has started
        self.method = method

    def _row(self, j: StoredJob, loss: list[float], reward: list[float]) -> TrainingJob:
        progress = None
        if j.budget_steps:
            progress = 1.0 if j.status == "succeeded" else min(1.0, j.steps / j.budget_steps)
        return TrainingJob(id=j.id, status=j.status, method=self.method, progress=progress,
                           started_at=j.started_at, finished_at=j.finished_at,
                           version=j.version, loss=loss, reward=reward)

    async def jobs(self, tenant: str) -> list[TrainingJob]:
        store = self.store()
        if store is None:
            return []
        t = await KeyStore(store.db).tenant_by_name(tenant)
        if t is None:
            return []
        out = []
        for j in await store.jobs(tenant_id=t.id, limit=50):
            loss, reward = await asyncio.to_thread(_curves, j.work_dir)
            out.append(self._row(j, loss, reward))
        return out
