"""The `ttt-overnight` arms of `molt bench run`: days of traffic on a TTT-enabled version,
an idle window of the overnight in-place update, more days.

Before the first day the arm's molt gets a TTT-enabled version as its active one: the
TTT layers `bench/ttt_arm.py` trains (or `MOLT_BENCH_TTT_VERSION`), registered and
promoted through the admin API, so every day is served with per-session fast weights
(each episode is one session). The window is the scheduler's own job, started as a user
starts it (POST /admin/train, `molt train now`) with `[trainer] method = "ttt"`: since
the active version has TTT layers, the job streams the window's query data through
them (`trainer.ttt.overnight_update`), registers the accumulated W_down delta as a
`ttt_delta` version, runs the eval gate through serving and promotes it on a pass
(serving hot-swaps). The runner follows the job until it ends and reports what it did.

`ttt-overnight-ungated` serves the delta on the next days even when the gate rejects it
(promoted through the admin API after the job, labelled), so that a user can see what
the gate kept out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.ttt_arm import TTTPlan, prepare_version, register

TENANT = "default"  # the open-mode tenant the driver's requests run as
BASE = "tiny"
WAITING = ("queued", "running")


@dataclass(frozen=True)
class OvernightPlan:
    """What a ttt-overnight arm's idle window does."""

    # the TTT layers the days are served with (bench/ttt_arm.py's recipe)
    layers: TTTPlan = field(default_factory=TTTPlan)
    # the overnight update (trainer.ttt_config.TTTTrainConfig: by default the mean over
    # sessions of each session's clipped per-chunk updates, times `delta_scale`, bounded
    # to `max_delta_ratio` times ||W_down||_F)
    delta_scale: float = 1.0
    max_delta_ratio: float | None = 0.1
    ungated: bool = False  # promote the delta even when the gate rejects it
    timeout_s: float = 1800.0  # the job must end within this (wall clock)

    def windows_after(self, days: Sequence[int]) -> set[int]:
        """One window, after the first half of the days (as the rl arms)."""
        return {days[len(days) // 2 - 1]} if len(days) >= 2 else set()

    def settings(self, _data_dir: Path) -> dict[str, Any]:
        """The arm's molt: no skills, no evolver; the trainer's method is TTT. The data split
        and the gate's minimum are the rl arm's (bench/rl_arm.py), so both decide alike."""
        return {"skills": {"enabled": False}, "evolver": {"enabled": False},
                "trainer": {"method": "ttt", "tick_s": 0.5,
                            "ttt": {"delta_scale": self.delta_scale,
                                    "max_delta_ratio": self.max_delta_ratio},
                            "data": {"heldout_fraction": 0.2}, "gate": {"min_heldout": 4}}}


def prepare_active(plan: OvernightPlan, client: httpx.Client, *, data_dir: Path, out: Path,
                   checkpoint: Path, seed: int) -> dict[str, Any]:
    """Train (or take) the TTT layers, register them and promote them: the version the days
    are served with. Its figures, for the report."""
    # molt loads the base model first: transformers' loading is not safe beside another load
    r = client.post("/v1/chat/completions", json={
        "model": f"{BASE}@base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    r.raise_for_status()
    art, figures = prepare_version(plan.layers, checkpoint, out, seed)
    version = register(art, data_dir / "registry", checkpoint)
    promote(client, version, "the TTT-enabled version the days are served with")
    return {"version": version, **figures}


def promote(client: httpx.Client, version: str, reason: str) -> dict[str, Any]:
    r = client.post(f"/admin/versions/{TENANT}/{BASE}/{version}/promote", json={"reason": reason},
                    timeout=300)
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


def follow(client: httpx.Client, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Poll the job (GET /admin/train/status) until it has ended."""
    deadline = time.monotonic() + timeout_s
    while job["status"] in WAITING:
        if time.monotonic() > deadline:
            raise TimeoutError(f"training job {job['id']} still {job['status']} after "
                               f"{timeout_s:g} s")
        time.sleep(0.5)
        r = client.get("/admin/train/status", params={"tenant": job["tenant"], "job": job["id"]})
        r.raise_for_status()
        job = r.json()["job"]
    return job


def overnight_window(plan: OvernightPlan, client: httpx.Client) -> dict[str, Any]:
    """One idle window: the scheduler's job (POST /admin/train), followed to its end; what it
    streamed, what the gate decided on which figures, and what is served next."""
    t0 = time.monotonic()
    before = active_version(client)
    r = client.post("/admin/train", json={"tenant": TENANT})
    r.raise_for_status()
    job = follow(client, r.json(), plan.timeout_s)
    report: dict[str, Any] = {"kind": "ttt-delta", "job": job["id"], "job_status": job["status"],
                              "parent": before, "version": job.get("version"),
                              "error": job.get("error"), "gate": job.get("gate") or {},
                              "ungated": plan.ungated}
    version = job.get("version")
    if version:
        meta = client.get(f"/admin/versions/{TENANT}/{BASE}/{version}")
        meta.raise_for_status()
        m = meta.json()
        report.update(version_kind=m.get("kind"), version_parent=m.get("parent"),
                      update=update_figures(m.get("metrics") or {}, job.get("work_dir")))
    gate = report["gate"]
    report["promoted"] = bool(gate.get("promoted"))
    if plan.ungated and version and not report["promoted"]:
        promote(client, version, f"ungated bench arm: the gate said {gate.get('status')}")
        report["promoted_ungated"] = True
    report["served_next"] = active_version(client)
    report["window_wall_min"] = (time.monotonic() - t0) / 60
    return report


def update_figures(metrics: dict[str, Any], work_dir: str | None) -> dict[str, Any]:
    """What the overnight pass streamed and added: the version's metrics, and the per-layer
    figures of its `ttt_update.json` (in the job's folder)."""
    import json

    out: dict[str, Any] = {"sessions": metrics.get("sessions"), "tokens": metrics.get("tokens")}
    if work_dir:
        path = Path(work_dir) / "ttt_update" / "ttt_update.json"
        if path.is_file():
            figures = json.loads(path.read_text())
            layers = figures.get("layers") or {}
            ratios = [float(v["delta_norm"]) / float(v["w_down_norm"]) for v in layers.values()
                      if v.get("delta_norm") is not None and v.get("w_down_norm")]
            out.update(overnight=figures.get("overnight"), delta_scale=figures.get("delta_scale"),
                       max_delta_ratio=figures.get("max_delta_ratio"), tau=figures.get("tau"),
                       layers=layers,
                       delta_ratio=max(ratios, default=None),
                       bounded=any(bool(v.get("bounded")) for v in layers.values()),
                       updates=sum(int(v.get("updates") or 0) for v in layers.values()),
                       clipped=sum(int(v.get("clipped") or 0) for v in layers.values()),
                       delta_norm=max((float(v.get("delta_norm") or 0.0)
                                       for v in layers.values()), default=0.0),
                       seconds=figures.get("seconds"))
    return out


def active_version(client: httpx.Client) -> str | None:
    r = client.get("/admin/versions", params={"tenant": TENANT, "base": BASE})
    r.raise_for_status()
    rows = r.json()["data"]
    return str(rows[0]["active"]) if rows and rows[0].get("active") else None
