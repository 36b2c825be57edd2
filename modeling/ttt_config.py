"""The configuration of the in-place TTT layers (modeling/ttt.py), saved as `ttt_config.json`
beside every artifact that holds trained TTT parameters.

In-place TTT (arXiv 2604.06169): the released setting puts TTT on every 6th layer with
eta = 3 and chunks of 4096 tokens (512-1024 were best in the ablation); those are the
defaults here, except the chunk size, which defaults to 512. The tiny policy of the
benchmark (4 layers, a 1024-token context) uses every 2nd layer and chunks of 32 tokens
(`TINY_POLICY`): a chunk must be small beside the context for the fast weights to see
several updates within one session. `tau` (the Frobenius bound on one chunk's update at
inference) is not given in the paper's summary; 1.0 is our default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.config_files import config_dict, config_from_dict, read_config, save_config

CONFIG_FILE = "ttt_config.json"
TARGETS = ("hidden", "embedding")


@dataclass(slots=True)
class TTTConfig:
    # which decoder layers get fast weights: an explicit list, else every `every`-th layer
    # (0-based layers every-1, 2*every-1, ...)
    layers: list[int] | None = None
    every: int = 6
    chunk_size: int = 512
    eta: float = 3.0
    tau: float | None = 1.0  # ||dW||_F bound per chunk at inference; None: no clipping
    # the target t the value is computed from: the MLP input x ("hidden": continual-training
    # mode) or the token embeddings ("embedding")
    target: str = "hidden"
    kernel_size: int = 5
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the config

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if self.every < 1:
            raise ValueError("every must be >= 1")
        if self.tau is not None and self.tau <= 0:
            raise ValueError("tau must be > 0 (or None for no clipping)")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd (the conv is centred: padding k // 2)")
        if self.layers is not None:
            self.layers = sorted({int(i) for i in self.layers})

    def selected_layers(self, num_layers: int) -> list[int]:
        """The decoder layers that get TTT, for a model with `num_layers` layers."""
        if self.layers is not None:
            bad = [i for i in self.layers if not 0 <= i < num_layers]
            if bad:
                raise ValueError(f"TTT layers {bad} do not exist (the model has {num_layers})")
            chosen = list(self.layers)
        else:
            chosen = [i for i in range(num_layers) if (i + 1) % self.every == 0]
        if not chosen:
            raise ValueError(f"the TTT config selects no layer of a {num_layers}-layer model")
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TTTConfig:
        return config_from_dict(cls, data, "TTT")

    def save(self, folder: Path) -> Path:
        return save_config(self, folder, CONFIG_FILE)

    @classmethod
    def load(cls, folder: Path) -> TTTConfig:
        return cls.from_dict(read_config(folder, CONFIG_FILE))


def tiny_policy_config() -> TTTConfig:
    """The setting used for the benchmark's tiny policy (see the module docstring)."""
    return TTTConfig(every=2, chunk_size=32, eta=3.0, tau=1.0)
