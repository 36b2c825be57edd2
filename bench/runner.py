"""`molt bench run`: simulated days of toolworld tasks, arm by arm, through a fresh molt.

Each arm gets its own freshly started molt (own store, own skill library) on
the local backend serving the tiny policy, and the same tasks (same seeds).
The agent driver talks to it with the `openai` SDK only. With `--endpoint`,
the same driver runs against any OpenAI-compatible server instead.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import openai
from tqdm import tqdm

from bench.agent import AgentDriver, EpisodeResult
from bench.arms import ARMS, Arm
from bench.policy.data import DEFAULT_SYSTEM_PROMPT
from bench.toolworld import generate_tasks
from bench.toolworld.grammars import GRAMMARS

DEFAULT_CHECKPOINT = Path(__file__).parent / "policy" / "checkpoint"
DEFAULT_COMPLAINT_RATE = 0.6
# A simulated day: its tasks spread evenly over a working day, then the night.
WORKDAY_S = 8 * 3600.0
DAY_S = 24 * 3600.0


class SimClock:
    """The evolver loop's clock in a simulated run: wall time plus the simulated time that passed.

    The driver plays a task in seconds; a user's tasks are minutes or hours
    apart. The loop's interval trigger (T seconds) is judged on this clock, so
    it means what it means for a user. Stored timestamps stay wall-clock.
    """

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped

    def advance(self, seconds: float) -> None:
        self.skipped += seconds


def loop_cadence(tasks_per_day: int) -> str:
    """How a loop arm's evolutions are paced, for the report."""
    from store.settings import EvolverSettings

    ev = EvolverSettings()
    gap = WORKDAY_S / max(1, tasks_per_day) / 60
    return (f"evolver loop, default triggers ({ev.trigger_failures} new failures, or any and "
            f"{ev.interval_s:g} s elapsed) on a simulated clock: {tasks_per_day} tasks a day over 8 hours "
            f"({gap:g} min apart); the loop checks its triggers after each episode (POST "
            f"/admin/evolver/tick); its wall-clock poll is off, so a run is reproducible")


def molt_settings(arm: Arm, data_dir: Path, checkpoint: Path) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "store": {"url": f"sqlite+aiosqlite:///{data_dir}/molt.db"},
        "models": [{"alias": "tiny", "local": str(checkpoint)}],
    }
    base.update(arm.settings(data_dir))
    return base


def day_tasks(day: int, n: int, seed: int) -> list[Any]:
    return generate_tasks(day, n, seed * 1000 + day)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    n = max(1, len(results))
    affected = sum(r.affected_steps for r in results)
    unaffected = sum(r.steps for r in results) - affected
    return {
        "episodes": len(results),
        "success": sum(r.success for r in results) / n,
        "step_accuracy": sum(r.step_accuracy for r in results) / n,
        "score": sum(r.score for r in results) / n,
        "complaints": sum(len(r.complaints) for r in results),
        "tool_errors": sum(r.tool_errors for r in results),
        "affected_steps": affected,
        "affected_accuracy": (sum(r.affected_ok for r in results) / affected) if affected else None,
        # the calls a drift leaves as on a base day: what RL must not forget
        "unaffected_accuracy": (sum(r.unaffected_ok for r in results) / unaffected) if unaffected else None,
        "errors": sum(1 for r in results if r.error),
        "by_drift": merge_drifts(r.by_drift for r in results),
    }


def merge_drifts(parts: Iterable[Mapping[str, Sequence[int]]]) -> dict[str, list[int]]:
    """Sum {drift key: [steps, right]} counts."""
    out: dict[str, list[int]] = {}
    for part in parts:
        for key, (n, ok) in part.items():
            tot = out.setdefault(key, [0, 0])
            tot[0] += n
            tot[1] += ok
    return dict(sorted(out.items()))


def run_arm(
    arm: Arm,
    *,
    days: Sequence[int],
    tasks_per_day: int,
    seed: int,
    out: Path,
    checkpoint: Path,
    endpoint: str | None = None,
    model: str = "tiny",
    progress: Callable[[int], None] = lambda _n: None,
    errors: str = "toolworld",
    complaint_rate: float = DEFAULT_COMPLAINT_RATE,
) -> dict[str, Any]:
    from molt.config import load_settings
    from molt.embedded import ServerThread, free_port
    from molt.wiring import build_app

    server: ServerThread | None = None
    clock = SimClock()
    if endpoint is None:
        # a fresh molt: a rerun into the same --out must not train on, or serve from, the
        # last run's store and registry
        shutil.rmtree(out / arm.name, ignore_errors=True)
        port = free_port()
        overrides = molt_settings(arm, out / arm.name / "molt", checkpoint)
        overrides["server"] = {"port": port}
        settings = load_settings(None, overrides)
        server = ServerThread(build_app(settings, evolver_clock=clock), port=port).__enter__()
        endpoint = server.url + "/v1"
    client = openai.OpenAI(base_url=endpoint, api_key=os.environ.get("MOLT_BENCH_API_KEY", "bench"),
                           max_retries=2, timeout=120)
    driver = AgentDriver(client, model, system_prompt=DEFAULT_SYSTEM_PROMPT,
                         feedback=server is not None, errors=errors, complaint_rate=complaint_rate,
                         varied_complaints=True, session_prefix="" if server is not None else None)
    per_day: dict[str, Any] = {}
    per_day_late: dict[str, Any] = {}  # the day's second half: after the learners had time to learn
    episodes: list[dict[str, Any]] = []
    evolutions: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []  # the rl arms' idle windows (bench/rl_arm.py)
    ends: list[tuple[float, int]] = []  # (wall time, day) at the end of each episode
    rules: list[dict[str, Any]] = []  # the edits the gate accepted, for the extraction check
    done = 0
    started = time.time()
    prepared: dict[str, Any] = {}  # the ttt-overnight arms' TTT-enabled version
    if arm.ttt is not None:
        return _run_ttt_arm(arm, server, client, driver, out=out, checkpoint=checkpoint, days=days,
                            tasks_per_day=tasks_per_day, seed=seed, progress=progress)
    try:
        if arm.overnight is not None:
            if server is None:
                raise ValueError(f"the {arm.name} arm trains and serves versions of the tiny "
                                 "policy: it needs molt's own local serving (no --endpoint)")
            prepared = overnight_prepare(arm, server.url, out, checkpoint, seed)
        for day in days:
            results = []
            for task in day_tasks(day, tasks_per_day, seed):
                results.append(driver.run(task, extra_system=arm.extra_system(day, errors)))
                progress(1)
                done += 1
                ends.append((time.time(), day))
                if arm.evolve_every and server is not None and done % arm.evolve_every == 0:
                    evolutions.append(evolve(server.url, day))
                if arm.loop and server is not None:  # the user's next task comes later
                    last = len(results) == tasks_per_day
                    clock.advance(WORKDAY_S / tasks_per_day + (DAY_S - WORKDAY_S if last else 0.0))
                    tick(server.url)
            per_day[str(day)] = summarize(results)
            per_day_late[str(day)] = summarize(results[len(results) // 2:])
            episodes += [asdict(r) for r in results]
            if arm.rl is not None and server is not None and day in arm.rl.windows_after(days):
                windows.append({"after_day": day, **rl_window(arm, server.url, out, checkpoint,
                                                             days, tasks_per_day, seed, episodes)})
            if arm.overnight is not None and server is not None \
                    and day in arm.overnight.windows_after(days):
                server.call(server.app.state.molt.recorder.flush())  # the day's turns are data
                windows.append({"after_day": day, **overnight_window(arm, server.url)})
            if arm.job is not None and server is not None and day in arm.job.windows_after(days):
                server.call(server.app.state.molt.recorder.flush())  # the day's turns are data
                windows.append({"after_day": day, **job_window(arm, server.url)})
            if windows and windows[-1]["after_day"] == day and windows[-1].get("promoted") \
                    and not windows[-1].get("promoted_ungated"):
                # the next day is served by the promoted version from its first request
                windows[-1]["served_after"] = swap_now(server, windows[-1])
        if server is not None and not arm.evolve_every and arm.loop:
            evolutions = loop_evolutions(server.url, ends)
        if server is not None and (arm.evolve_every or arm.loop):
            rules = accepted_rules(server.url, ends)
    finally:
        driver.close()
        if server is not None:
            server.__exit__(None, None, None)
    flat = [EpisodeResult(**e) for e in episodes]
    overall = summarize(flat)
    if server is not None:  # after the server stopped: the recorder has drained
        turns = main_turns(out / arm.name / "molt" / "molt.db")
        add_skill_tokens(turns, per_day, per_day_late, overall, episodes)
        if arm.overnight is not None or arm.rl is not None or arm.job is not None:
            add_served_versions(turns, per_day, episodes)
    cadence = (f"runner's cadence: POST /admin/evolve every {arm.evolve_every} episodes" if arm.evolve_every
               else loop_cadence(tasks_per_day) if arm.loop else "none")
    result = {"arm": arm.name, "description": arm.description, "per_day": per_day,
              "per_day_late": per_day_late, "overall": overall, "seconds": time.time() - started,
              "episodes": episodes, "evolutions": evolutions, "cadence": cadence,
              "windows": windows, "rules": rules}
    if arm.overnight is not None:
        result["ttt_layers"] = prepared
    return result


def _run_ttt_arm(arm: Arm, server: Any, client: openai.OpenAI, driver: AgentDriver, *, out: Path,
                 checkpoint: Path, days: Sequence[int], tasks_per_day: int, seed: int,
                 progress: Callable[[int], None]) -> dict[str, Any]:
    """The ttt arm (bench/ttt_arm.py): its per-day figures are the `ttt` way's later episodes;
    `ttt` holds every way's."""
    from bench.ttt_arm import run_arm as run_ttt

    assert arm.ttt is not None
    started = time.time()
    try:
        if server is None:
            raise ValueError("the ttt arm serves a TTT version of the tiny policy: it needs molt's "
                             "own local serving (no --endpoint)")

        def tasks_of(day: int) -> list[Any]:
            progress(tasks_per_day)
            return day_tasks(day, tasks_per_day, seed)

        result = run_ttt(arm.ttt, client=client, driver=driver, data_dir=out / arm.name / "molt",
                         out=out / arm.name, checkpoint=checkpoint, days=days, tasks_of=tasks_of,
                         seed=seed)
    finally:
        driver.close()
        if server is not None:
            server.__exit__(None, None, None)
    episodes = result.pop("episodes")
    per_day = {d: v["ttt"] for d, v in result["per_day"].items()}
    return {"arm": arm.name, "description": arm.description, "per_day": per_day,
            "per_day_late": per_day, "overall": result["later"]["ttt"],
            "seconds": time.time() - started, "episodes": episodes["ttt"], "evolutions": [],
            "cadence": "none", "windows": [], "rules": [], "ttt": result,
            "ttt_episodes": episodes}


def tick(url: str) -> None:
    """Let molt's evolver loop look at what happened, on its own triggers, before the next task."""
    r = httpx.post(url + "/admin/evolver/tick", json={}, timeout=1800)
    r.raise_for_status()


def main_turns(store: Path) -> list[dict[str, Any]]:
    """Every main turn (no side calls or replays) in an arm's SQLite store, as stored."""
    import asyncio

    from store.database import Database
    from store.settings import StoreSettings
    from store.trajectories import TrajectoryStore

    async def read() -> list[dict[str, Any]]:
        db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{store}"))
        try:
            return await TrajectoryStore(db).turns_since(0.0)
        finally:
            await db.close()

    return [t for t in asyncio.run(read()) if t.get("turn_type") == "main"]


def request_skill_tokens(turns: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Turn id -> the estimated tokens of the skills injected into it (the proxy's estimate,
    recorded with each injected skill), for each of an arm's main turns (`main_turns`)."""
    return {str(t["id"]): sum(int(s.get("tokens") or 0) for s in t.get("injected_skills") or [])
            for t in turns}


def add_skill_tokens(turns: Sequence[dict[str, Any]], per_day: dict[str, Any], per_day_late: dict[str, Any],
                     overall: dict[str, Any], episodes: Sequence[dict[str, Any]]) -> None:
    """Mean skill tokens per model request (`skill_tokens`): per day (whole and late half)
    and over the arm."""
    tokens = request_skill_tokens(turns)

    def mean(eps: Sequence[dict[str, Any]]) -> float | None:
        ids = [t for e in eps for t in e["turn_ids"] if t in tokens]
        return sum(tokens[t] for t in ids) / len(ids) if ids else None

    days: dict[str, list[dict[str, Any]]] = {}
    for e in episodes:
        days.setdefault(str(e["day"]), []).append(e)
    for day, eps in days.items():
        per_day[day]["skill_tokens"] = mean(eps)
        per_day_late[day]["skill_tokens"] = mean(eps[len(eps) // 2:])
    overall["skill_tokens"] = mean(episodes)


def loop_evolutions(url: str, ends: Sequence[tuple[float, int]]) -> list[dict[str, Any]]:
    """The evolutions molt's own loop ran (its default triggers), for the report."""
    r = httpx.get(url + "/admin/evolutions", params={"limit": 1000}, timeout=60)
    r.raise_for_status()
    out = []
    for e in sorted(r.json(), key=lambda e: e.get("started_at") or 0.0):
        rep = e.get("summary") or {}
        proposals = rep.get("proposals") or []
        at = e.get("started_at") or 0.0
        after, day = _when(at, ends)  # which episode it came after
        out.append({"trigger": e.get("trigger"), "at": at, "after_episode": after, "day": day,
                    "failures": rep.get("failures"),
                    "accepted": [p for p in proposals if p.get("status") == "accepted"],
                    "rejected": [p for p in proposals if p.get("status") != "accepted"]})
    return out


def _when(at: float, ends: Sequence[tuple[float, int]]) -> tuple[int, int | None]:
    """(episodes finished by wall time ``at``, the day of the last of them)."""
    after = sum(1 for t, _ in ends if t <= at)
    return after, ends[after - 1][1] if after else None


def accepted_rules(url: str, ends: Sequence[tuple[float, int]]) -> list[dict[str, Any]]:
    """Every edit the gate accepted (name, body, tools), with the episode and day it came after."""
    r = httpx.get(url + "/admin/proposals", params={"status": "accepted"}, timeout=60)
    r.raise_for_status()
    out = []
    for p in sorted(r.json(), key=lambda p: p.get("created_at") or 0.0):
        after, day = _when(p.get("created_at") or 0.0, ends)
        for op in p.get("ops") or []:
            out.append({"day": day, "after_episode": after, "proposal": p.get("id"), "op": op.get("op"),
                        "name": op.get("name"), "body": op.get("body"), "tools": op.get("tools")})
    return out


def rl_window(arm: Arm, url: str, out: Path, checkpoint: Path, days: Sequence[int],
              tasks_per_day: int, seed: int, episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The arm's idle window (bench/rl_arm.py) against its running molt."""
    from bench.rl_arm import idle_window

    assert arm.rl is not None
    data_dir = out / arm.name / "molt"
    tasks = {t.id: t for d in days for t in day_tasks(d, tasks_per_day, seed)}
    task_of = {tid: tasks[e["task_id"]] for e in episodes for tid in e["turn_ids"]}
    return idle_window(arm.rl, url=url, store_url=f"sqlite+aiosqlite:///{data_dir}/molt.db",
                       registry_root=data_dir / "registry", checkpoint=checkpoint,
                       out=out / arm.name / f"window-{len(episodes)}", task_of=task_of)


def overnight_prepare(arm: Arm, url: str, out: Path, checkpoint: Path,
                      seed: int) -> dict[str, Any]:
    """The ttt-overnight arm's TTT-enabled version, promoted before the first day."""
    from bench.ttt_overnight import prepare_active

    assert arm.overnight is not None
    with httpx.Client(base_url=url, timeout=600) as client:
        return prepare_active(arm.overnight, client, data_dir=out / arm.name / "molt",
                              out=out / arm.name, checkpoint=checkpoint, seed=seed)


def overnight_window(arm: Arm, url: str) -> dict[str, Any]:
    """The ttt-overnight arm's idle window (bench/ttt_overnight.py): the scheduler's job."""
    from bench.ttt_overnight import overnight_window as window

    assert arm.overnight is not None
    with httpx.Client(base_url=url, timeout=600) as client:
        return window(arm.overnight, client)


def job_window(arm: Arm, url: str) -> dict[str, Any]:
    """The rl-job arm's idle window (bench/rl_job.py): molt's own training job."""
    from bench.rl_job import job_window as window

    assert arm.job is not None
    with httpx.Client(base_url=url, timeout=600) as client:
        return window(arm.job, client)


def swap_now(server: Any, window: Mapping[str, Any]) -> dict[str, str]:
    """After a promotion through the registry, make the running molt serve it now (what the
    promote route does), not at its next registry poll: otherwise the next day's first
    requests are measured on the version the window replaced."""
    from bench.rl_arm import BASE_NAME, TENANT_NAME
    from proxy.routes.admin_versions import sync_served

    served: dict[str, str] = server.call(sync_served(server.app.state.molt, TENANT_NAME, BASE_NAME))
    if served.get(BASE_NAME) != window.get("version"):
        raise RuntimeError(f"serving did not swap to {window.get('version')}: {served}")
    return served


def add_served_versions(turns: Sequence[dict[str, Any]], per_day: dict[str, Any],
                        episodes: Sequence[dict[str, Any]]) -> None:
    """Each day's served weight versions (`served_versions`) and how many of its model requests
    each served."""
    served = {str(t["id"]): t.get("weight_version") for t in turns}
    for e in episodes:
        counts = per_day[str(e["day"])].setdefault("served_versions", {})
        for t in e["turn_ids"]:
            if t in served:
                v = served[t] or "base"
                counts[v] = counts.get(v, 0) + 1


def evolve(url: str, day: int) -> dict[str, Any]:
    """One evolution through molt's admin API; what it accepted, for the report."""
    r = httpx.post(url + "/admin/evolve", json={}, timeout=600)
    r.raise_for_status()
    rep = r.json()
    return {"day": day, "failures": rep["failures"],
            "accepted": [p for p in rep["proposals"] if p["status"] == "accepted"],
            "rejected": [p for p in rep["proposals"] if p["status"] != "accepted"],
            "context": (rep.get("context") or {}).get("reason")}


def run(
    arms: Sequence[str],
    *,
    days: Sequence[int],
    tasks_per_day: int,
    seed: int,
    out: Path,
    checkpoint: Path = DEFAULT_CHECKPOINT,
    endpoint: str | None = None,
    model: str = "tiny",
    errors: str = "toolworld",
    complaint_rate: float = DEFAULT_COMPLAINT_RATE,
) -> dict[str, Any]:
    if errors not in GRAMMARS:
        raise ValueError(f"unknown error grammar {errors!r}; known: {', '.join(GRAMMARS)}")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"days": list(days), "tasks_per_day": tasks_per_day, "seed": seed,
                              "checkpoint": str(checkpoint), "errors": errors,
                              "complaint_rate": complaint_rate, "arms": {}}
    total = len(arms) * len(days) * tasks_per_day
    with tqdm(total=total, desc="molt bench", unit="episode") as bar:
        for name in arms:
            bar.set_postfix_str(name)
            report["arms"][name] = run_arm(
                ARMS[name], days=days, tasks_per_day=tasks_per_day, seed=seed, out=out,
                checkpoint=checkpoint, endpoint=endpoint, model=model, progress=bar.update,
                errors=errors, complaint_rate=complaint_rate,
            )
    from bench.report import write_report

    write_report(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
