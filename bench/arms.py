"""The arms of `molt bench run`: one table, each arm a fresh molt with its own settings.

`baseline`: the policy alone, no skills. `oracle`: the day's true conventions
stated in molt's skills block (the upper bound of what context can do).
`oracle-molt-words`: the same conventions in the evolver's own wording (what
the tiny policy makes of a rule stated the way molt states it). `skills`: the
evolver loop on the triggers a user gets by default (N failures or T
seconds, `EvolverSettings`); `skills-runner-cadence`: the runner asks for an
evolution every 2 episodes instead (reproducible; reported beside, labelled).
`rl`: an idle window of LoRA RL between days (bench/rl_arm.py); `ttt-overnight`: days
served by a TTT-enabled version, an idle window of the overnight in-place update (the
scheduler's `ttt_delta` job, gated), more days (bench/ttt_overnight.py).
`tafc` / `tafc-parameter`: no learning, molt's think-augmented tools on
(function mode; parameter mode at `THINK_TAU`, since toolworld's plain schemas
wrap nothing at the default 0.6). The policy must have seen think fields:
run them on a checkpoint fine-tuned with `pretrain --think-share` (dev/LOG.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.policy.data import THINK_TAU
from bench.rl_arm import RLPlan
from bench.rl_job import JobPlan
from bench.toolworld import BASE, conventions_for_day, state_conventions
from bench.ttt_arm import TTTPlan
from bench.ttt_overnight import OvernightPlan
from modeling.blocks import render_skills_block

NO_LEARNING: dict[str, Any] = {"skills": {"enabled": False}, "evolver": {"enabled": False}}


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    # Settings overrides for the arm's fresh molt, given its data folder.
    settings: Callable[[Path], dict[str, Any]] = field(default=lambda _d: dict(NO_LEARNING))
    # Extra system messages the driver sends on a day (after its own prompt), given the day
    # and the run's error grammar (`--errors`).
    extra_system: Callable[[int, str], list[str]] = field(default=lambda _day, _errors: [])
    # Ask molt to evolve (POST /admin/evolve) after every this many episodes; 0: never.
    evolve_every: int = 0
    # molt's evolver loop runs on its default triggers (the report lists its evolutions)
    loop: bool = False
    # Idle windows of RL (bench/rl_arm.py): train, gate and promote between days; None: never.
    rl: RLPlan | None = None
    # Long sessions served with in-place TTT (bench/ttt_arm.py); the arm plays only those.
    ttt: TTTPlan | None = None
    # Days served by a TTT-enabled version, with an idle window of the overnight in-place
    # update (bench/ttt_overnight.py); None: never.
    overnight: OvernightPlan | None = None
    # An idle window of molt's own training job on its defaults (bench/rl_job.py); None: never.
    job: JobPlan | None = None


def _oracle_block(day: int, _errors: str = "toolworld") -> list[str]:
    conv = conventions_for_day(day)
    drifted = [f for f, v in conv.items() if v != BASE[f]]
    skills = state_conventions(conv, families=drifted) if drifted else []
    return [render_skills_block(skills)] if skills else []


def _molt_words_block(day: int, errors: str = "toolworld") -> list[str]:
    """The drifted conventions as the evolver's miner states them (its layout and words), from
    the errors the tools give in the run's grammar."""
    from bench.toolworld.molt_words import state_in_molt_words

    conv = conventions_for_day(day)
    drifted = {f: v for f, v in conv.items() if v != BASE[f]}
    skills = state_in_molt_words(drifted, errors)
    return [render_skills_block(skills)] if skills else []


def _tafc(mode: str, tau: float = 0.6) -> Callable[[Path], dict[str, Any]]:
    def settings(_data_dir: Path) -> dict[str, Any]:
        return {**NO_LEARNING, "tafc": {"mode": mode, "tau": tau}}

    return settings


def _skills(model: bool = False, loop: bool = True) -> Callable[[Path], dict[str, Any]]:
    def settings(_data_dir: Path) -> dict[str, Any]:
        # loop=True: the evolver loop runs on its default triggers, as for any user;
        # loop=False: the runner asks for an evolution every few episodes (reproducible).
        ev: dict[str, Any] = {"enabled": loop, "min_support": 2}
        if loop:
            # The runner checks the loop's triggers after every episode (POST
            # /admin/evolver/tick, on the simulated clock). The loop's own wall-clock poll
            # would also fire mid-episode, at moments that depend on the machine's load, so
            # two runs of one arm (or two arms on one day) would see different evolutions.
            # With it off, a run is a function of its seed.
            ev["poll_s"] = 1e9
        if model:
            ev["model"] = {"base_url": os.environ["MOLT_BENCH_EVOLVER_URL"],
                           "model": os.environ.get("MOLT_BENCH_EVOLVER_MODEL", "gpt-4o-mini"),
                           "api_key_env": "MOLT_BENCH_EVOLVER_KEY"}
        # The tiny policy reads 1,024 tokens at most (and was pretrained on 768): the skills
        # block must leave room for the conversation (300 estimated tokens: ~500 of its own).
        return {"skills": {"enabled": True, "seed_dir": None, "token_budget": 300}, "evolver": ev}

    return settings


_JOB = JobPlan()
_OVERNIGHT = OvernightPlan()
_UNGATED = OvernightPlan(ungated=True)

ARMS: dict[str, Arm] = {
    "baseline": Arm("baseline", "the tiny policy alone, no skills"),
    "oracle": Arm("oracle", "the day's true conventions stated in the skills block (upper bound)",
                  extra_system=_oracle_block),
    "oracle-molt-words": Arm("oracle-molt-words",
                             "the day's drifted conventions stated in the evolver's own wording",
                             extra_system=_molt_words_block),
    "skills": Arm("skills", "the offline evolver learns skills from tool errors and complaints "
                  "(the evolver loop on its default triggers)", settings=_skills(), loop=True),
    "skills-runner-cadence": Arm(
        "skills-runner-cadence", "as skills, but the runner asks for an evolution every 2 episodes "
        "(the runner's cadence, not a user's default)", settings=_skills(loop=False), evolve_every=2),
    "llm-skills": Arm("llm-skills", "skills written by an evolver model (MOLT_BENCH_EVOLVER_URL)",
                      settings=_skills(model=True), loop=True),
    "tafc": Arm("tafc", "the policy alone with TAFC in function mode (a think property first in "
                "every tool; stripped before the agent sees the calls)", settings=_tafc("function")),
    "tafc-parameter": Arm("tafc-parameter", f"as tafc, in parameter mode at tau {THINK_TAU} (enum and "
                          "unit parameters become {think, value})",
                          settings=_tafc("parameter", THINK_TAU)),
    "rl": Arm("rl", "days of traffic, an idle window of RL on recorded evidence (LoRA, gated, "
              "hot-swapped), more days; no skills", rl=RLPlan("evidence")),
    "skills+rl": Arm("skills+rl", "skills as in `skills`, and RL on recorded evidence in the idle "
                     "window, with skill-conditioned distillation on the steps served with skills",
                     settings=_skills(), loop=True, rl=RLPlan("evidence", distill=1.0)),
    "rl-job": Arm("rl-job", "as rl, as a user runs it: the idle window is molt's own training job "
                  "(POST /admin/train, `molt train now`) on the embedded [trainer] defaults",
                  settings=_JOB.settings, job=_JOB),
    "rl-verifier-prm": Arm("rl-verifier-prm", "upper bound: toolworld's verifier as PRM (as rl, "
                           "the window's rewards and gate from the hidden truth)",
                           rl=RLPlan("verifier")),
    "ttt": Arm("ttt", "a day is one long session: its first episodes reveal the conventions "
               "(tool errors, complaints in the chat), later episodes need them in fresh "
               "conversations; later episodes without TTT, with TTT serving, and with the "
               "revealing part in context (the reference)", ttt=TTTPlan()),
    "ttt-overnight": Arm(
        "ttt-overnight", "days served by a TTT-enabled version (per-session fast weights), an "
        "idle window of the overnight in-place update (the scheduler's job: the days' sessions "
        "streamed into a ttt_delta version, eval gate, hot-swap on a pass), more days; no skills",
        settings=_OVERNIGHT.settings, overnight=_OVERNIGHT),
    "ttt-overnight-ungated": Arm(
        "ttt-overnight-ungated", "as ttt-overnight, but the delta is served on the next days "
        "even when the gate rejects it (what the gate kept out)",
        settings=_UNGATED.settings, overnight=_UNGATED),
}
