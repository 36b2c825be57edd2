"""The configuration of TTT training and of the overnight in-place update (trainer/ttt.py),
saved as `ttt_train_config.json` beside every artifact they write.

Defaults are for the tiny policy on CPU (the TTT layers themselves: modeling/ttt_config.py,
`tiny_policy_config`). The paper trains conv and W_target with AdamW at lr 5e-6 on a 4-8B
model; a 1M-parameter policy with a few hundred steps needs a far larger rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modeling.ttt_config import TTTConfig, tiny_policy_config
from store.config_files import config_dict, config_from_dict, read_config, save_config

CONFIG_FILE = "ttt_train_config.json"


@dataclass(slots=True)
class TTTTrainConfig:
    ttt: TTTConfig = field(default_factory=tiny_policy_config)
    # training conv + W_target (optionally with a LoRA) with next-token loss
    max_steps: int = 40
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 1  # sequences per optimiser step
    seq_len: int = 1024  # a longer session is cut into windows of this many tokens
    grad_clip: float = 1.0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    heldout_sessions: int = 4  # sessions kept out of training to measure the loss on
    # The overnight update. "session_mean": every session is streamed from the version's own
    # W_down (fresh fast weights, as serving starts a session) and the delta is the mean of
    # the sessions' accumulated updates, so its size does not grow with the day's traffic;
    # "stream": one fast-weight state carried through every session, the sum of all the
    # clipped per-chunk updates (grows with the number of chunks streamed).
    overnight: Literal["session_mean", "stream"] = "session_mean"
    delta_scale: float = 1.0  # the accumulated update is multiplied by this
    # then each layer's added delta is scaled down, when needed, to ||dW||_F <= this times
    # ||W_down||_F of the parent version; None: no bound
    max_delta_ratio: float | None = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ttt, dict):
            self.ttt = TTTConfig.from_dict(self.ttt)
        if self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.batch_size < 1 or self.seq_len < 2:
            raise ValueError("batch_size must be >= 1 and seq_len >= 2")
        if self.delta_scale < 0:
            raise ValueError("delta_scale must be >= 0")
        if self.overnight not in ("session_mean", "stream"):
            raise ValueError(f"overnight must be 'session_mean' or 'stream', not {self.overnight!r}")
        if self.max_delta_ratio is not None and self.max_delta_ratio <= 0:
            raise ValueError("max_delta_ratio must be > 0 (or None for no bound)")

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TTTTrainConfig:
        return config_from_dict(cls, data, "TTT training")

    def save(self, folder: Path) -> Path:
        return save_config(self, folder, CONFIG_FILE)

    @classmethod
    def load(cls, folder: Path) -> TTTTrainConfig:
        return cls.from_dict(read_config(folder, CONFIG_FILE))
