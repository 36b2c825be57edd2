"""RL on a LoRA adapter with step rewards: one training window, from a split to an adapter.

`train` reads top to bottom:
1. the training steps become a trl dataset (trainer/data.py);
2. the base model is loaded from its folder (modeling/loading.py) and wrapped in a fresh
   peft LoRA adapter by trl;
3. `StepGRPOTrainer` (trainer/grpo.py) samples G completions per context, scores every
   step with `reward_fn` (trainer/rewards.py `StepRewards`, or any function of a recorded
   step and a sampled completion), and trains on per-token advantages;
4. with `cfg.stop_at_reward`, training ends once the logged mean reward has stayed at or
   above it for `cfg.stop_patience` logged steps (the samples already earn what the
   rewards can give: more steps only move the policy further from the base); with
   `cfg.stop_idle_steps`, it also ends after that many logged steps in a row with no
   learning signal: every group's rewards constant (skipped) and, with distillation,
   the teacher and the student agreeing within `cfg.idle_distill_eps` per token;
   a `should_stop()` the scheduler passes is checked once before training starts and
   after every optimiser step: when it
   says stop, the trainer saves a checkpoint and returns (`stopped_early`), and a later
   call with `resume_from` (a trl/transformers checkpoint folder, e.g.
   `latest_checkpoint(out_dir)`) continues from it with the same optimizer state;
5. the adapter is written in the registry's `lora` layout (`adapter_config.json`,
   `adapter_model.safetensors`) with `rl_config.json` and `train_log.json` beside it,
   and the KL from the base model is estimated on samples of the trained policy.

Hardware is configuration: run it as is on CPU or one GPU, or under `accelerate launch`
on several; nothing here names a device.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modeling.chat import render_prompt
from modeling.loading import LoadedBase, eos_ids, load_base
from trainer.data import to_dataset, with_signal
from trainer.distill import completion_logprobs
from trainer.errors import NotEnoughData
from trainer.grpo import StepGRPOTrainer, StepReward, StepRewardFn
from trainer.rl_config import RLConfig
from trainer.types import Split, Step

ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"


@dataclass(slots=True)
class TrainResult:
    steps: int
    mean_reward: float | None
    kl: float | None
    adapter_dir: Path | None
    stopped_early: bool
    checkpoint_dir: Path | None = None
    seconds: float = 0.0
    log: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "mean_reward": self.mean_reward, "kl": self.kl,
                "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
                "stopped_early": self.stopped_early,
                "checkpoint_dir": str(self.checkpoint_dir) if self.checkpoint_dir else None,
                "seconds": self.seconds}


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest `checkpoint-N` folder a run in `out_dir` saved, or None."""
    root = Path(out_dir) / CHECKPOINTS
    found = [p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()] if root.is_dir() else []
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def _callbacks(cfg: RLConfig, should_stop: Callable[[], bool] | None) -> tuple[Any, Any]:
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        stopped = False  # by `should_stop` (paused: a checkpoint is saved to resume from)
        saturated = False  # by `cfg.stop_at_reward` (done: nothing left to learn)
        streak = 0

        idle = 0

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> Any:
            logs = logs or {}
            if cfg.stop_idle_steps and "step_rewards/skipped_groups" in logs:
                gap = logs.get("distill/teacher_minus_student")
                quiet = float(logs["step_rewards/skipped_groups"]) >= 1.0 and (
                    gap is None or abs(float(gap)) < cfg.idle_distill_eps)
                self.idle = self.idle + 1 if quiet else 0
                if self.idle >= cfg.stop_idle_steps:
                    self.saturated = True
                    control.should_training_stop = True
            r = logs.get("reward")
            if cfg.stop_at_reward is None or not isinstance(r, (int, float)) or math.isnan(r):
                return control
            self.streak = self.streak + 1 if r >= cfg.stop_at_reward else 0
            if self.streak >= cfg.stop_patience:
                self.saturated = True
                control.should_training_stop = True
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
            if should_stop is not None and should_stop():
                self.stopped = True
                control.should_training_stop = True
                control.should_save = True
            return control

    class ConfigBeside(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
            cfg.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            return control

    return Stop(), ConfigBeside()


def _grpo_args(cfg: RLConfig, out: Path) -> Any:
    from trl.trainer.grpo_config import GRPOConfig

    bf16 = cfg.bf16
    if bf16 is None:
        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        loss_type=cfg.loss_type, epsilon=cfg.epsilon, num_iterations=cfg.num_iterations,
        beta=cfg.beta, bf16=bf16, activation_checkpointing=False, gradient_checkpointing=False,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, report_to=[], seed=cfg.seed,
        disable_tqdm=True, dataloader_pin_memory=torch.cuda.is_available(), **cfg.extra,
    )


@dataclass(slots=True)
class Run:
    """A built trainer, ready to `train()`; `build` makes one, `train` runs it."""

    trainer: StepGRPOTrainer
    base: LoadedBase
    stop: Any


def build(split: Split, base_dir: Path, out_dir: Path, cfg: RLConfig, reward_fn: StepRewardFn, *,
          should_stop: Callable[[], bool] | None = None, blocks: Sequence[str] = ()) -> Run:
    """Steps 1-3 of the module docstring: the dataset, the base model, the trainer."""
    from peft import LoraConfig

    if not split.train:
        raise NotEnoughData("the split has no training steps")
    dataset = to_dataset(split.train)
    base = load_base(base_dir)
    steps = {s.turn_id: s for s in split.train}
    stop, beside = _callbacks(cfg, should_stop)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # transformers 5 deprecation notices raised inside trl's own calls
        warnings.simplefilter("ignore", FutureWarning)
        trainer = StepGRPOTrainer(
            model=base.model, args=_grpo_args(cfg, Path(out_dir) / CHECKPOINTS),
            train_dataset=dataset, processing_class=base.tokenizer, peft_config=lora,
            callbacks=[stop, beside], step_reward=StepReward(reward_fn, steps, base.tokenizer),
            blocks=blocks, block_probability=cfg.block_probability,
            skip_constant_groups=cfg.skip_constant_groups, distill_coef=cfg.distill_coef,
            distill_clip=cfg.distill_clip, seed=cfg.seed, hindsight=cfg.hindsight,
            teacher_samples=cfg.teacher_samples,
        )
    return Run(trainer, base, stop)


def train(split: Split, base_dir: Path, out_dir: Path, cfg: RLConfig, reward_fn: StepRewardFn, *,
          should_stop: Callable[[], bool] | None = None, resume_from: Path | None = None,
          blocks: Sequence[str] = ()) -> TrainResult:
    """Train a LoRA adapter on `split.train` (with `cfg.focus`, its steps with a learning
    signal: trainer.data.with_signal); see the module docstring."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    if cfg.focus:
        split = Split(with_signal(split.train, served_skills=cfg.distill_coef > 0), split.heldout,
                      split.retention)
    if should_stop is not None and should_stop() and resume_from is None:
        return TrainResult(0, None, None, None, True, latest_checkpoint(out_dir), time.monotonic() - t0)
    run = build(split, base_dir, out_dir, cfg, reward_fn, should_stop=should_stop, blocks=blocks)
    trainer = run.trainer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    log = [{k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
           for row in trainer.state.log_history if "reward" in row or "loss" in row]
    log = [r for r in log if "loss" in r or "reward" in r]
    # a logged step whose completions all got no reward logs none (trl writes None)
    rewards = [r["reward"] for r in log if "reward" in r and not math.isnan(r["reward"])]
    model = trainer.accelerator.unwrap_model(trainer.model)
    kl = estimate_kl(model, run.base.tokenizer, split.train[: cfg.kl_samples], cfg, eos_ids(run.base))
    adapter = out_dir / ADAPTER
    if trainer.accelerator.is_main_process:
        model.save_pretrained(str(adapter))
        cfg.save(adapter)
        (adapter / "train_log.json").write_text(json.dumps(log, indent=1))
    return TrainResult(
        steps=int(trainer.state.global_step),
        mean_reward=sum(rewards) / len(rewards) if rewards else None, kl=kl, adapter_dir=adapter,
        stopped_early=bool(run.stop.stopped), checkpoint_dir=latest_checkpoint(out_dir),
        seconds=time.monotonic() - t0, log=log,
    )


def estimate_kl(model: Any, tokenizer: Any, steps: Sequence[Step], cfg: RLConfig,
                eos: set[int]) -> float | None:
    """Per-token KL(policy || base), estimated on one sample of the policy per context.

    The mean of log p_policy - log p_base over sampled tokens (an unbiased estimate).
    """
    if not steps:
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    torch.manual_seed(cfg.seed)
    prompts, comps = [], []
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos)))
    for step in steps:
        ids = render_prompt(tokenizer, step.messages, step.tools)
        x = torch.tensor([ids], device=device)
        with torch.no_grad():
            y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True,
                               temperature=cfg.temperature, max_new_tokens=cfg.max_completion_length,
                               eos_token_id=sorted(eos), pad_token_id=pad)
        prompts.append(ids)
        comps.append([int(t) for t in y[0, len(ids):]])
    policy = completion_logprobs(model, prompts, comps, pad_id=pad, device=device)
    with model.disable_adapter():
        ref = completion_logprobs(model, prompts, comps, pad_id=pad, device=device)
    if was_training:
        model.train()
    diffs = torch.cat([p - r for p, r in zip(policy, ref, strict=True)])
    return float(diffs.mean()) if diffs.numel() else None
