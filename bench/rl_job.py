"""The `rl-job` arm of `molt bench run`: the rl arm as a user runs it.

`rl` (bench/rl_arm.py) runs the trainer's parts from the bench process with the bench's
own RL plan. `rl-job` runs none of them itself: its idle window is molt's own training
job, started as a user starts it (POST /admin/train, what `molt train now` does), on
the embedded `[trainer]` defaults (trainer/rl_config.py; only the data split's held-out
share and the gate's minimum are set, as for the other windowed arms, so that all decide
alike). The job loads the query data, mines the evidence, trains the LoRA, registers
the candidate, judges it through serving and promotes it on a pass; the runner follows
the job to its end and reports what it did and what it cost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.rl_arm import cpu_seconds
from bench.ttt_overnight import TENANT, active_version, follow


@dataclass(frozen=True)
class JobPlan:
    """What an rl-job arm's idle window does: one `molt train now` on the defaults."""

    timeout_s: float = 1800.0  # the job must end within this (wall clock)

    def windows_after(self, days: Sequence[int]) -> set[int]:
        """One window, after the first half of the days (as the rl arms)."""
        return {days[len(days) // 2 - 1]} if len(days) >= 2 else set()

    def settings(self, _data_dir: Path) -> dict[str, Any]:
        """No skills, no evolver; the trainer on its defaults (LoRA RL on recorded evidence)."""
        return {"skills": {"enabled": False}, "evolver": {"enabled": False},
                "trainer": {"tick_s": 0.5, "data": {"heldout_fraction": 0.2},
                            "gate": {"min_heldout": 4}}}


def job_window(plan: JobPlan, client: httpx.Client) -> dict[str, Any]:
    """One idle window: molt's training job, followed to its end; its figures, in the rl
    arms' report fields (bench/report.py `window_table`)."""
    t_wall, t_cpu = time.monotonic(), cpu_seconds()  # molt runs in this process's thread
    before = active_version(client)
    r = client.post("/admin/train", json={"tenant": TENANT})
    r.raise_for_status()
    job = follow(client, r.json(), plan.timeout_s)
    metrics = job.get("metrics") or {}
    data = metrics.get("data") or {}
    gate = job.get("gate") or {}
    return {"kind": "lora-job", "prm": "evidence (molt's job, defaults)", "job": job["id"],
            "job_status": job["status"], "stop_reason": job.get("stop_reason"),
            "error": job.get("error"), "parent": before, "version": job.get("version"),
            "steps_trained_on": data.get("train"), "heldout": data.get("heldout"),
            "retention": data.get("retention"), "steps": job.get("steps"),
            "mean_reward": metrics.get("reward"), "kl": metrics.get("kl"),
            "gate": gate, "promoted": bool(gate.get("promoted")),
            "status": gate.get("status") or job.get("stop_reason") or job["status"],
            "window_cpu_min": (cpu_seconds() - t_cpu) / 60,
            "window_wall_min": (time.monotonic() - t_wall) / 60}
