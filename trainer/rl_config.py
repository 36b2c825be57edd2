"""The configuration of one RL run (trainer/rl.py), saved as `rl_config.json` beside every
artifact it writes (checkpoints and the adapter).

Defaults are the window measured on the tiny policy on CPU (bench/rl_arm.py; dev/LOG.md
2026-12-01 and 2026-12-03): G = 8, lr 2e-3, 60 steps, hindsight samples, training only on
the steps with a learning signal. MetaClaw used LoRA rank 32, lr 1e-4, batch 4: lower
`learning_rate` for a larger model.
Hardware is not configured here: the same run goes to CPU, one GPU, or several GPUs
through `accelerate launch` (trl's and transformers' own device handling); `bf16=None`
means "bf16 when a GPU supports it".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.config_files import config_dict, config_from_dict, read_config, save_config

CONFIG_FILE = "rl_config.json"


@dataclass(slots=True)
class RLConfig:
    # sampling: G completions per context
    num_generations: int = 8
    batch_size: int = 16  # completions per device and step: a multiple of num_generations
    max_completion_length: int = 96
    temperature: float = 1.0
    # optimisation
    max_steps: int = 60
    learning_rate: float = 2e-3
    loss_type: str = "dapo"  # any trl GRPOConfig loss_type ("grpo", "dapo", "cispo", ...)
    epsilon: float = 0.2
    num_iterations: int = 1
    beta: float = 0.0  # KL anchor to the base model (0: none)
    # stop once the logged mean reward stays >= this for `stop_patience` logged steps (None: never)
    stop_at_reward: float | None = None
    stop_patience: int = 3
    # stop after this many logged steps in a row with no learning signal (every group's
    # rewards constant, and distillation's teacher - student gap below `idle_distill_eps`
    # per token); None: never
    stop_idle_steps: int | None = None
    idle_distill_eps: float = 1e-3
    # LoRA (peft)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    # step rewards -> advantages (trainer/advantages.py)
    skip_constant_groups: bool = True
    # skill-conditioned distillation (trainer/distill.py): 0 turns it off
    distill_coef: float = 0.0
    distill_clip: float = 5.0
    # hindsight samples (trainer/grpo.py): the recorded step's hindsight fix replaces the
    # last of its G samples (an off-policy, RAFT-style supervised term). Without it a policy
    # that never writes the form the tools now want never samples it either: every group
    # scores -1 and is skipped (dev/LOG.md 2026-12-01, e2)
    hindsight: bool = True
    # train only on the steps with a learning signal (trainer.data.with_signal): a hindsight
    # fix or a negative step reward (and, with distillation, the steps served with skills)
    focus: bool = True
    # teacher samples (trainer/grpo.py): a step served with skills whose answer drew no
    # negative reward gets that answer (written with the skills in context) as its last
    # sample, so distillation can push toward what the student never samples
    teacher_samples: bool = False
    # fast-slow training: probability that a rollout draws one of the extra system blocks
    block_probability: float = 1.0
    # checkpoints (for pause/resume) and logs
    save_steps: int = 10
    save_total_limit: int = 2
    logging_steps: int = 1
    kl_samples: int = 8  # contexts used for the final KL estimate to the base model
    seed: int = 0
    bf16: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more GRPOConfig fields, passed as is

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2 (a group needs two samples to compare)")
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of "
                             f"num_generations {self.num_generations}")
        if self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if not 0.0 <= self.block_probability <= 1.0:
            raise ValueError("block_probability must be in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLConfig:
        return config_from_dict(cls, data, "RL")

    def save(self, folder: Path) -> Path:
        return save_config(self, folder, CONFIG_FILE)

    @classmethod
    def load(cls, folder: Path) -> RLConfig:
        return cls.from_dict(read_config(folder, CONFIG_FILE))
