"""One idle window of RL on toolworld, measured honestly: `python -m bench.rl_window`.

nanochat style: the arguments first, then the work in order, then a summary table.

1. record drift days through a real molt serving the tiny policy (bench/runner.py
   `run_arm`, skills and evolver off, the driver posting what the environment says);
2. load the query data from that molt's store (trainer.data.load_split);
3. rewards: recorded evidence only (trainer/rewards.py, plus molt's EvidenceChecks, the
   evolver's checks, as a StepCheck), or, for the labelled upper bound
   (`--prm verifier`), toolworld's verifier as the PRM (bench only: never in trainer/);
4. train a LoRA with trainer.rl.train, timing process CPU and wall time;
5. evaluate base policy and base + adapter with bench.policy.evaluate's teacher-forced
   step accuracy: base-day conventions (every call), the day's drifted conventions
   unstated (calls the drift changes), and the day's calls the drift does not change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# -- arguments ---------------------------------------------------------------
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--days", default="4,5", help="days recorded before the window (comma list)")
p.add_argument("--tasks-per-day", type=int, default=12)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", type=Path, default=Path("/tmp/rl_window"))
p.add_argument("--reuse", action="store_true", help="reuse the recorded store in --out if present")
p.add_argument("--prm", choices=("evidence", "verifier"), default="evidence")
p.add_argument("--learned-prm", action="store_true", help="add trainer/prm.py's learned PRM")
p.add_argument("--steps", type=int, default=40)
p.add_argument("--G", type=int, default=8, help="num_generations")
p.add_argument("--batch", type=int, default=16)
p.add_argument("--temperature", type=float, default=1.0)
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--rank", type=int, default=8)
p.add_argument("--alpha", type=int, default=16)
p.add_argument("--targets", default="all-linear", help="LoRA target modules (comma list or all-linear)")
p.add_argument("--beta", type=float, default=0.0, help="KL anchor")
p.add_argument("--hindsight", action="store_true", help="hindsight fixes as off-policy samples")
p.add_argument("--focus", action="store_true",
               help="train only on steps the evidence flags (a refused call or a hindsight fix)")
p.add_argument("--stop-at-reward", type=float, default=None,
               help="stop once the mean reward stays at or above this for 3 logged steps")
p.add_argument("--max-len", type=int, default=64, help="max completion tokens")
p.add_argument("--eval-steps", type=int, default=100, help="teacher-forced steps per condition")
p.add_argument("--adapter", type=Path, default=None, help="evaluate this adapter, train nothing")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--cpu-budget-min", type=float, default=15.0, help="stop training past this CPU time")
args = p.parse_args()

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch

torch.set_num_threads(args.threads)

from bench.agent import EpisodeResult
from bench.arms import NO_LEARNING, Arm
from bench.policy.data import (
    DEFAULT_SYSTEM_PROMPT,
    make_task_like,
    play,
    sample_task,
    system_messages,
)
from bench.policy.evaluate import default_seed, eval_items, generate, score
from bench.rl_arm import VerifierCheck, cpu_seconds
from bench.runner import DEFAULT_CHECKPOINT, day_tasks, run_arm
from bench.toolworld import BASE, conventions_for_day
from trainer.data import with_signal

DAYS = [int(d) for d in args.days.split(",") if d]
OUT = args.out
ARM = Arm("rl-record", "drift days recorded for one RL window (no skills)",
          settings=lambda _d: dict(NO_LEARNING))
STORE = OUT / ARM.name / "molt" / "molt.db"


# -- 1. record -----------------------------------------------------------------
t_wall, t_cpu = time.monotonic(), cpu_seconds()
episodes_file = OUT / "episodes.json"
if args.reuse and STORE.exists() and episodes_file.exists():
    episodes = [EpisodeResult(**e) for e in json.loads(episodes_file.read_text())]
    print(f"reusing {len(episodes)} recorded episodes in {STORE}")
else:
    import shutil

    shutil.rmtree(OUT / ARM.name, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    rec = run_arm(ARM, days=DAYS, tasks_per_day=args.tasks_per_day, seed=args.seed, out=OUT,
                  checkpoint=DEFAULT_CHECKPOINT)
    episodes = [EpisodeResult(**e) for e in rec["episodes"]]
    episodes_file.write_text(json.dumps([asdict(e) for e in episodes]))
    print("recorded", {d: {k: v for k, v in s.items() if k in ("success", "step_accuracy",
                                                                "affected_accuracy", "tool_errors")}
                       for d, s in rec["per_day"].items()})
record_cpu, record_wall = cpu_seconds() - t_cpu, time.monotonic() - t_wall


# -- 2. data -------------------------------------------------------------------
async def load() -> tuple[Any, Any]:
    from molt.train_checks import EvidenceChecks
    from store.database import Database
    from store.feedback import FeedbackStore
    from store.settings import StoreSettings
    from store.trajectories import TrajectoryStore
    from trainer.data import DataConfig, load_split
    from trainer.rewards import RewardWeights

    db = await Database.open(StoreSettings(url=f"sqlite+aiosqlite:///{STORE}"))
    try:
        turns = await TrajectoryStore(db).turns_since(0.0)
        tenant = str(turns[0]["tenant_id"])
        weights = RewardWeights(verifier=1.0) if args.prm == "verifier" else RewardWeights()
        split = await load_split(db, tenant, DataConfig(heldout_fraction=0.2), weights)
        checks = await EvidenceChecks.mine(TrajectoryStore(db), FeedbackStore(db), tenant)
    finally:
        await db.close()
    return split, checks


split, evidence_checks = asyncio.run(load())
n_fix = sum(1 for s in split.train if s.hindsight)
if args.focus:
    # contexts whose groups can vary: the others are skipped by GRPO and cost only sampling
    split.train = with_signal(split.train)
print(f"data: {len(split.train)} train steps ({n_fix} with a hindsight fix), "
      f"{len(split.heldout)} held out, {len(evidence_checks)} turns with evidence checks")


# -- 3. rewards ------------------------------------------------------------------
from trainer.rewards import RewardWeights, StepRewards, source_agreement

if args.prm == "verifier":
    weights = RewardWeights(evidence=0.0, prm=0.0, judge=0.0, verifier=1.0)
    tasks = {t.id: t for d in DAYS for t in day_tasks(d, args.tasks_per_day, args.seed)}
    checks: dict[str, Any] = {"verifier": VerifierCheck(
        {tid: tasks[e.task_id] for e in episodes for tid in e.turn_ids})}
else:
    weights = RewardWeights()
    checks = {"evidence": evidence_checks}
learned = None
if args.learned_prm:
    from modeling.loading import load_base
    from trainer.prm import fit_or_none

    learned, prm_report = fit_or_none(load_base(DEFAULT_CHECKPOINT), split.train)
    print("learned PRM:", prm_report if learned is not None else "not enough labels")
reward_fn = StepRewards(weights, checks=checks, prm=learned)
agreement = source_agreement(split.train + split.heldout)
print("recorded rewards' agreement with the verifier:", json.dumps(agreement))


# -- 4. train ------------------------------------------------------------------
from trainer.rl import train
from trainer.rl_config import RLConfig

targets: list[str] | str = args.targets if args.targets == "all-linear" else args.targets.split(",")
cfg = RLConfig(num_generations=args.G, batch_size=args.batch, max_completion_length=args.max_len,
               temperature=args.temperature, max_steps=args.steps, learning_rate=args.lr,
               beta=args.beta, lora_r=args.rank, lora_alpha=args.alpha, target_modules=targets,
               hindsight=args.hindsight, focus=args.focus, stop_at_reward=args.stop_at_reward, save_steps=10_000, kl_samples=8, seed=args.seed)
t_wall, t_cpu = time.monotonic(), cpu_seconds()
budget_s = args.cpu_budget_min * 60
if args.adapter is not None:  # evaluate an adapter trained before: no training
    from trainer.rl import TrainResult

    log = json.loads((args.adapter / "train_log.json").read_text())
    rws = [r["reward"] for r in log if "reward" in r]
    result = TrainResult(len(log), sum(rws) / len(rws) if rws else None, None, args.adapter,
                         False, log=log)
else:
    result = train(split, DEFAULT_CHECKPOINT, OUT / "run", cfg, reward_fn,
                   should_stop=lambda: cpu_seconds() - t_cpu > budget_s)
train_cpu, train_wall = cpu_seconds() - t_cpu, time.monotonic() - t_wall
print(f"trained {result.steps} steps, mean reward {result.mean_reward}, KL {result.kl}, "
      f"CPU {train_cpu / 60:.2f} min, wall {train_wall / 60:.2f} min"
      + (" (stopped by the CPU budget)" if result.stopped_early else ""))
curve = [(int(r.get("step", 0)), round(r["reward"], 3)) for r in result.log if "reward" in r]
print("learning curve (step, mean reward):", curve)


# -- 5. evaluate ---------------------------------------------------------------
def day_items(day: int, n: int, affected: bool, seed: int) -> list[Any]:
    """Teacher-forced steps under `day`'s conventions, nothing stated: affected calls only
    (`affected`), or only the calls the drift leaves as on a base day."""
    from bench.policy.evaluate import EvalItem

    rng = random.Random(f"rlwin:{seed}:{day}:{affected}")
    conv = conventions_for_day(day)
    head = system_messages([], DEFAULT_SYSTEM_PROMPT)
    items: list[Any] = []
    while len(items) < n:
        task = sample_task(rng, conv, need_affected=affected, world_prefix=f"eval{seed}")
        for k, call in enumerate(task.plan):
            if call.affected == affected and len(items) < n:
                items.append(EvalItem("day", task, k, play(task, head, upto=k).messages))
    return items


def accuracy(model: Any, tok: Any, items: Sequence[Any]) -> float:
    verdicts = score(items, generate(model, tok, [i.messages for i in items]))
    return sum(ok for ok, _ in verdicts) / max(len(verdicts), 1)


t_eval = time.monotonic()
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

seed = default_seed()
last = DAYS[-1]
drifted = [f for f, v in conventions_for_day(last).items() if v != BASE[f]]
base_items = eval_items("base", args.eval_steps, seed)
last_conv = conventions_for_day(last)
sets = {"base": base_items,
        # base-day steps whose right call the day's drift leaves unchanged
        "base_undrifted": [i for i in base_items
                           if make_task_like(i.task, last_conv).plan[:i.step + 1] == i.task.plan[:i.step + 1]],
        "drifted": day_items(last, args.eval_steps, True, seed),
        "day_other": day_items(last, args.eval_steps, False, seed)}
tok = AutoTokenizer.from_pretrained(DEFAULT_CHECKPOINT)
base_model = AutoModelForCausalLM.from_pretrained(DEFAULT_CHECKPOINT).eval()
before = {k: accuracy(base_model, tok, v) for k, v in sets.items()}
tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DEFAULT_CHECKPOINT),
                                  str(result.adapter_dir)).merge_and_unload().eval()
after = {k: accuracy(tuned, tok, v) for k, v in sets.items()}
eval_wall = time.monotonic() - t_eval

# -- summary -------------------------------------------------------------------
summary = {
    "args": vars(args) | {"out": str(args.out)}, "days": DAYS, "drifted_families": drifted,
    "train_steps": len(split.train), "hindsight_steps": n_fix, "steps": result.steps,
    "mean_reward": result.mean_reward, "kl": result.kl, "curve": curve,
    "record_cpu_min": record_cpu / 60, "record_wall_min": record_wall / 60,
    "train_cpu_min": train_cpu / 60, "train_wall_min": train_wall / 60,
    "eval_wall_min": eval_wall / 60, "before": before, "after": after,
    "agreement_with_verifier": agreement, "stopped_by_budget": result.stopped_early,
}
(OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
print()
print(f"| prm | steps | reward | KL | CPU min (wall) | base before→after | base, undrifted calls "
      f"before→after | drifted {drifted} day {last} before→after | day {last} other calls "
      "before→after |")
print("|---|---|---|---|---|---|---|---|---|")
rw = f"{result.mean_reward:.3f}" if result.mean_reward is not None else "-"
kl = f"{result.kl:.4f}" if result.kl is not None else "-"
print(f"| {args.prm}{'+hindsight' if args.hindsight else ''} | {result.steps} | {rw} | {kl} | "
      f"{train_cpu / 60:.1f} ({train_wall / 60:.1f}) | "
      f"{before['base']:.1%}→{after['base']:.1%} | "
      f"{before['base_undrifted']:.1%}→{after['base_undrifted']:.1%} (n={len(sets['base_undrifted'])}) | "
      f"{before['drifted']:.1%}→{after['drifted']:.1%} | "
      f"{before['day_other']:.1%}→{after['day_other']:.1%} |")
